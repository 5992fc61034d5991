using System.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.AspNetCore.Problems;

/// <summary>Writes RFC 9457 problem details, and stamps every problem with its trace and correlation ids.</summary>
internal static class HttpProblems
{
    public const string TraceIdExtension = "traceId";
    public const string CorrelationIdExtension = "correlationId";

    /// <summary>Answers the request with a problem of <paramref name="status"/> (nothing may have been written yet).</summary>
    public static async ValueTask WriteAsync(HttpContext context, int status, string title, string detail, Action<ProblemDetails>? extend = null)
    {
        var problem = new ProblemDetails { Status = status, Title = title, Detail = detail };
        extend?.Invoke(problem);
        await WriteAsync(context, problem, exception: null).ConfigureAwait(false);
    }

    /// <summary>Answers the request with <paramref name="problem"/>, through the application's problem details service when there is one.</summary>
    public static async ValueTask WriteAsync(HttpContext context, ProblemDetails problem, Exception? exception)
    {
        context.Response.StatusCode = problem.Status ?? StatusCodes.Status500InternalServerError;
        var service = context.RequestServices.GetService<IProblemDetailsService>();
        if (service is not null
            && await service.TryWriteAsync(new ProblemDetailsContext { HttpContext = context, ProblemDetails = problem, Exception = exception }).ConfigureAwait(false))
        {
            return;
        }

        Stamp(context, problem);
        await context.Response.WriteAsJsonAsync(problem, options: null, contentType: "application/problem+json", context.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>
    /// Adds the trace id (the current W3C trace, else the request id) and the request's correlation id, and says why a bare
    /// 404, 405 or 415 (routing answers them before any endpoint runs, without a body) was answered.
    /// </summary>
    public static void Stamp(HttpContext context, ProblemDetails problem)
    {
        problem.Detail ??= BareStatusDetail(context, problem.Status);

        if (!problem.Extensions.ContainsKey(TraceIdExtension))
        {
            problem.Extensions[TraceIdExtension] = Activity.Current?.Id ?? context.TraceIdentifier;
        }

        if (!problem.Extensions.ContainsKey(CorrelationIdExtension))
        {
            problem.Extensions[CorrelationIdExtension] = context.GetCorrelationId();
        }
    }

    // Nothing of the request is quoted but its Content-Type, which Kestrel bounds with the other headers.
    private static string? BareStatusDetail(HttpContext context, int? status)
    {
        switch (status)
        {
            case StatusCodes.Status404NotFound:
                return "Nothing is found at this path.";
            case StatusCodes.Status405MethodNotAllowed:
                var allow = context.Response.Headers.Allow;
                return allow.Count == 0
                    ? "This resource does not answer the request's method."
                    : $"This resource answers only the methods {string.Join(", ", (IEnumerable<string?>)allow)} (see Allow).";
            case StatusCodes.Status415UnsupportedMediaType:
                var got = string.IsNullOrEmpty(context.Request.ContentType) ? "no Content-Type" : $"'{context.Request.ContentType}'";
                return $"This endpoint does not read a body of the content type sent ({got}); send application/json.";
            default:
                return null;
        }
    }
}
