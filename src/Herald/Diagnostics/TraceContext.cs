using System.Diagnostics;
using Herald.Messages;

namespace Herald.Diagnostics;

/// <summary>Carries W3C trace context in envelope headers, so a trace continues across a hop.</summary>
internal static class TraceContext
{
    /// <summary>Returns the envelope with the activity's traceparent (and tracestate) in its headers.</summary>
    public static Envelope Inject(Envelope envelope, Activity? activity)
    {
        if (activity is null || activity.IdFormat != ActivityIdFormat.W3C || activity.Id is not { } id)
        {
            return envelope;
        }

        var headers = new Dictionary<string, string>(envelope.Headers.Count + 2, StringComparer.Ordinal);
        foreach (var pair in envelope.Headers)
        {
            headers[pair.Key] = pair.Value;
        }

        headers[HeaderNames.TraceParent] = id;
        if (activity.TraceStateString is { Length: > 0 } state)
        {
            headers[HeaderNames.TraceState] = state;
        }

        return envelope with { Headers = headers };
    }

    /// <summary>The parent context carried by the envelope, or default when it carries none (or a malformed one).</summary>
    public static ActivityContext Extract(Envelope envelope)
    {
        if (envelope.Headers.TryGetValue(HeaderNames.TraceParent, out var parent)
            && ActivityContext.TryParse(parent, envelope.GetHeader(HeaderNames.TraceState), isRemote: true, out var context))
        {
            return context;
        }

        return default;
    }
}
