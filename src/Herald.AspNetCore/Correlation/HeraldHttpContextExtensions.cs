using System.Diagnostics;
using Herald.AspNetCore.Correlation;
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
    /// id, the request id as the cause, the authenticated user's name, and the W3C trace context of the current activity, so
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
            UserId = context.User.Identity is { IsAuthenticated: true, Name: { Length: > 0 } name } ? name : null,
            Headers = headers,
        };
    }
}
