using System.Diagnostics;
using Herald.AspNetCore.Problems;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Herald.AspNetCore.Correlation;

/// <summary>
/// Takes the request's <c>X-Correlation-Id</c> (or makes one), echoes it on the response, tags the current activity with it
/// (tag and baggage <c>herald.correlation_id</c>) and opens a log scope with it; a malformed one is answered 400.
/// </summary>
internal sealed class CorrelationMiddleware(RequestDelegate next, ILogger<CorrelationMiddleware> logger)
{
    public async Task InvokeAsync(HttpContext context)
    {
        var values = context.Request.Headers[CorrelationIds.HeaderName];
        string? problem = null;
        string? id = null;
        if (values.Count > 1)
        {
            problem = "it was sent more than once";
        }
        else if (values.Count == 1 && !string.IsNullOrEmpty(values[0]))
        {
            problem = CorrelationIds.Problem(values[0]!);
            id = values[0];
        }

        if (problem is not null)
        {
            // The rejected value is never echoed: the response (and its problem) carries a fresh id.
            Use(context, CorrelationIds.NewId());
            Log.InvalidCorrelationId(logger, context.Request.Method, context.Request.Path.Value ?? "/", problem);
            await HttpProblems.WriteAsync(
                context,
                StatusCodes.Status400BadRequest,
                "The X-Correlation-Id header is not valid.",
                $"The {CorrelationIds.HeaderName} header is not valid: {problem}.").ConfigureAwait(false);
            return;
        }

        id ??= CorrelationIds.NewId();
        Use(context, id);
        if (Activity.Current is { } activity)
        {
            activity.SetTag(CorrelationIds.ActivityKey, id);
            activity.SetBaggage(CorrelationIds.ActivityKey, id);
        }

        using (logger.BeginScope(new KeyValuePair<string, object?>[] { new("CorrelationId", id) }))
        {
            await next(context).ConfigureAwait(false);
        }
    }

    private static void Use(HttpContext context, string id)
    {
        context.Features.Set(new CorrelationFeature(id));

        // On starting, not now: an exception handler clears the response's headers before it writes its problem.
        context.Response.OnStarting(static state =>
        {
            var (ctx, value) = ((HttpContext, string))state;
            ctx.Response.Headers[CorrelationIds.HeaderName] = value;
            return Task.CompletedTask;
        }, (context, id));
    }
}
