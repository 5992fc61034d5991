using System.Diagnostics;
using Herald.AspNetCore.Correlation;
using Herald.AspNetCore.Internal;
using Herald.EventSourcing.Aggregates;
using Herald.Messages;

namespace Microsoft.AspNetCore.Http;

/// <summary>What Herald knows about a request: its correlation id and the metadata its commands carry.</summary>
public static class HeraldHttpContextExtensions
{
    /// <summary>
    /// The request's correlation id: the <c>X-Correlation-Id</c> it sent or the one made for it by <c>UseHeraldCorrelation</c>
    /// (without that middleware, one is made on first use and kept for the request).
    /// </summary>
    public static string GetCorrelationId(this HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Features.Get<CorrelationFeature>() is { } feature)
        {
            return feature.CorrelationId;
        }

        var made = new CorrelationFeature(CorrelationIds.NewId());
        context.Features.Set(made);
        return made.CorrelationId;
    }

    /// <summary>
    /// The metadata to send this request's commands with (<c>ICommandBus.SendAsync(command, metadata, ct)</c>): its correlation
    /// id, the request id as the cause, the authenticated user (its name, else its <c>NameIdentifier</c> or <c>sub</c> claim, as
    /// the Idempotency-Key scope knows it), and the W3C trace context of the current activity, so
    /// the stored events and the messages they lead to continue the request's trace.
    /// </summary>
    public static EventMetadata GetEventMetadata(this HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        Dictionary<string, string>? headers = null;
        if (Activity.Current is { IdFormat: ActivityIdFormat.W3C, Id: { } traceParent } activity)
        {
            headers = new Dictionary<string, string>(StringComparer.Ordinal) { [HeaderNames.TraceParent] = traceParent };
            if (activity.TraceStateString is { Length: > 0 } state)
            {
                headers[HeaderNames.TraceState] = state;
            }
        }

        return new EventMetadata
        {
            CorrelationId = context.GetCorrelationId(),
            CausationId = context.TraceIdentifier,
            UserId = HttpUser.Id(context.User, out _),
            Headers = headers,
        };
    }

    /// <summary>
    /// The request's <c>Idempotency-Key</c> as <c>WithIdempotencyKey</c> keeps it (scoped to the route and user, hashed), or
    /// null when the endpoint has no key. Stable across retries of one operation, even after the service crashed.
    /// </summary>
    public static string? GetIdempotencyKey(this HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return context.Features.Get<Herald.AspNetCore.Idempotency.IdempotencyKeyFeature>()?.ScopedKey;
    }

    /// <summary>
    /// A Guid derived from the request's idempotency key (null without one): use it as the id of what the request creates,
    /// so a retry whose first attempt committed but crashed before its response was stored finds that thing instead of
    /// making a second one. The key's lock and stored response cannot commit with your writes; this id can.
    /// </summary>
    public static Guid? GetIdempotentId(this HttpContext context)
    {
        if (GetIdempotencyKey(context) is not { } key)
        {
            return null;
        }

        Span<byte> hash = stackalloc byte[32];
        System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes("herald-idempotent-id\n" + key), hash);
        var bytes = hash[..16];
        // RFC 9562 version 8 (custom) with the variant bits, so the value is a well-formed UUID.
        bytes[6] = (byte)((bytes[6] & 0x0F) | 0x80);
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80);
        return new Guid(bytes, bigEndian: true);
    }
}
