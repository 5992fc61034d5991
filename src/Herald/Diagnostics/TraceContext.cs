using System.Diagnostics;
using Herald.Messages;

namespace Herald.Diagnostics;

/// <summary>Carries W3C trace context in envelope headers, so a trace continues across a hop.</summary>
internal static class TraceContext
{
    /// <summary>
    /// Returns the envelope with the activity's traceparent (and tracestate) in its headers, unless the caller set a
    /// traceparent there (a context forwarded from another system), which is kept, as <see cref="WithCurrentUnlessSet"/> does.
    /// </summary>
    public static Envelope InjectUnlessSet(Envelope envelope, Activity? activity) =>
        IsW3C(activity) && !IsSet(envelope.Headers) ? envelope with { Headers = With(envelope.Headers, activity!) } : envelope;

    /// <summary>The trace context the caller set in <paramref name="headers"/>, or default when it set none: the parent of a producer span.</summary>
    public static ActivityContext SetBy(IReadOnlyDictionary<string, string> headers) =>
        IsSet(headers) && ActivityContext.TryParse(Find(headers, HeaderNames.TraceParent), Find(headers, HeaderNames.TraceState), isRemote: true, out var context)
            ? context
            : default;

    /// <summary>Whether the headers carry a traceparent (in any case, as <see cref="Extract"/> reads it); allocates nothing.</summary>
    private static bool IsSet(IReadOnlyDictionary<string, string> headers) => headers.Count > 0 && Find(headers, HeaderNames.TraceParent) is not null;

    /// <summary>
    /// The headers with the current activity's traceparent (and tracestate) added, unless they carry a traceparent
    /// already or there is no W3C activity: then the same headers, with nothing allocated.
    /// </summary>
    public static IReadOnlyDictionary<string, string> WithCurrentUnlessSet(IReadOnlyDictionary<string, string> headers)
    {
        var current = Activity.Current;
        return IsW3C(current) && !IsSet(headers) ? With(headers, current!) : headers;
    }

    private static bool IsW3C(Activity? activity) => activity is { IdFormat: ActivityIdFormat.W3C, Id: not null };

    private static Dictionary<string, string> With(IReadOnlyDictionary<string, string> headers, Activity activity)
    {
        var copy = new Dictionary<string, string>(headers.Count + 2, StringComparer.Ordinal);
        foreach (var pair in headers)
        {
            copy[pair.Key] = pair.Value;
        }

        copy[HeaderNames.TraceParent] = activity.Id!;
        if (activity.TraceStateString is { Length: > 0 } state)
        {
            copy[HeaderNames.TraceState] = state;
        }

        return copy;
    }

    /// <summary>The parent context carried by the envelope, or default when it carries none (or a malformed one).</summary>
    public static ActivityContext Extract(Envelope envelope)
    {
        var headers = envelope.Headers;
        if (Find(headers, HeaderNames.TraceParent) is { } parent
            && ActivityContext.TryParse(parent, Find(headers, HeaderNames.TraceState), isRemote: true, out var context))
        {
            return context;
        }

        return default;
    }

    // Herald writes the names in lower case, but they are case-insensitive (W3C): another client's may come as Go's
    // canonical "Traceparent", or "ce-Traceparent" read as the attribute "Traceparent". Looked for in any case only when
    // the lower-case name is missing, without allocating (the decoders' headers are dictionaries, with a struct enumerator).
    private static string? Find(IReadOnlyDictionary<string, string> headers, string name)
    {
        if (headers.TryGetValue(name, out var value) || headers.Count == 0)
        {
            return value;
        }

        if (headers is Dictionary<string, string> dictionary)
        {
            foreach (var (key, text) in dictionary)
            {
                if (key.Equals(name, StringComparison.OrdinalIgnoreCase))
                {
                    return text;
                }
            }

            return null;
        }

        foreach (var (key, text) in headers)
        {
            if (key.Equals(name, StringComparison.OrdinalIgnoreCase))
            {
                return text;
            }
        }

        return null;
    }
}
