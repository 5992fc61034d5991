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
    /// 415 (routing refuses a content type before any endpoint runs) was answered.
    /// </summary>
    public static void Stamp(HttpContext context, ProblemDetails problem)
    {
        if (problem.Status == StatusCodes.Status415UnsupportedMediaType && problem.Detail is null)
        {
            var got = string.IsNullOrEmpty(context.Request.ContentType) ? "no Content-Type" : $"'{context.Request.ContentType}'";
            problem.Detail = $"This endpoint does not read a body of the content type sent ({got}); send application/json.";
        }

        if (!problem.Extensions.ContainsKey(TraceIdExtension))
        {
            problem.Extensions[TraceIdExtension] = Activity.Current?.Id ?? context.TraceIdentifier;
        }

        if (!problem.Extensions.ContainsKey(CorrelationIdExtension))
        {
            problem.Extensions[CorrelationIdExtension] = context.GetCorrelationId();
        }
    }
}
