using System.Text.Json;
using Herald.Cqrs.Validation;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.AspNetCore.Problems;

/// <summary>
/// Answers every exception that reaches <c>UseExceptionHandler()</c> with problem details: a validation failure 400 with
/// its first errors, a malformed or unreadable body 400/413/415 with the reason, a concurrency conflict 409, the application's
/// mapped exceptions their status, and anything else 500 without its message.
/// </summary>
internal sealed class HeraldExceptionHandler(
    IOptions<HeraldHttpOptions> options,
    IOptions<Microsoft.AspNetCore.Http.Json.JsonOptions> json,
    ILogger<HeraldExceptionHandler> logger) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        var problem = Describe(exception, options.Value, json.Value.SerializerOptions.PropertyNamingPolicy);
        var status = problem.Status ?? StatusCodes.Status500InternalServerError;
        var path = httpContext.Request.Path.Value ?? "/";
        if (status >= 500)
        {
            Log.UnhandledException(logger, exception, httpContext.Request.Method, path);
        }
        else
        {
            Log.MappedException(logger, exception.GetType().Name, status, httpContext.Request.Method, path, problem.Detail ?? problem.Title ?? "");
        }

        await HttpProblems.WriteAsync(httpContext, problem, exception).ConfigureAwait(false);
        return true;
    }

    internal static ProblemDetails Describe(Exception exception, HeraldHttpOptions options, JsonNamingPolicy? naming)
    {
        switch (exception)
        {
            case ValidationException validation:
                return new HttpValidationProblemDetails(Errors(validation, naming))
                {
                    Status = StatusCodes.Status400BadRequest,
                    Title = "The request is not valid.",
                    Detail = validation.Errors.Count switch
                    {
                        1 => "1 error.",
                        > MaxListedErrors => $"{validation.Errors.Count} errors; the first {MaxListedErrors} are listed, {validation.Errors.Count - MaxListedErrors} more are not.",
                        var count => $"{count} errors.",
                    },
                };
            case BadHttpRequestException bad:
                return new ProblemDetails
                {
                    Status = bad.StatusCode,
                    Title = bad.StatusCode switch
                    {
                        StatusCodes.Status413PayloadTooLarge => "The request body is too large.",
                        StatusCodes.Status415UnsupportedMediaType => "The request's content type is not supported.",
                        _ => "The request could not be read.",
                    },
                    Detail = bad.InnerException is JsonException json ? JsonReason(json) : bad.Message,
                };
        }

        if (options.Find(exception.GetType()) is { } mapping)
        {
            return new ProblemDetails
            {
                Status = mapping.Status,
                Title = mapping.Title ?? (mapping.Status == StatusCodes.Status409Conflict ? "Conflict" : null),
                Detail = mapping.ExposeMessage
                    ? exception.Message
                    : "The resource was changed by another request at the same time; read it again and retry.",
            };
        }

        return new ProblemDetails
        {
            Status = StatusCodes.Status500InternalServerError,
            Title = "An unexpected error occurred.",
            Detail = "The server failed to handle the request; quote the trace id when you report it.",
        };
    }

    // A body of thousands of bad lines fails thousands of times: listing every error made the answer as large as the body.
    internal const int MaxListedErrors = 20;

    // Keyed by the names the client used in its JSON ("items[0].quantity"), not by the CLR members ("Items[0].Quantity").
    private static Dictionary<string, string[]> Errors(ValidationException validation, JsonNamingPolicy? naming) =>
        validation.Errors
            .Take(MaxListedErrors)
            .GroupBy(e => JsonPath(e.Property, naming), StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.Select(e => e.Message).ToArray(), StringComparer.Ordinal);

    internal static string JsonPath(string property, JsonNamingPolicy? naming)
    {
        if (naming is null || property.Length == 0)
        {
            return property;
        }

        var segments = property.Split('.');
        for (var i = 0; i < segments.Length; i++)
        {
            var segment = segments[i];
            var index = segment.IndexOf('[', StringComparison.Ordinal);
            var name = index < 0 ? segment : segment[..index];
            segments[i] = (name.Length == 0 ? "" : naming.ConvertName(name)) + (index < 0 ? "" : segment[index..]);
        }

        return string.Join('.', segments);
    }

    // The serializer's own message names CLR types; the client needs where its JSON went wrong, not our type names.
    internal static string JsonReason(JsonException json)
    {
        const string missing = "missing required properties including: ";
        var at = json.Message.IndexOf(missing, StringComparison.Ordinal);
        if (at >= 0)
        {
            return "The request body lacks required properties: " + json.Message[(at + missing.Length)..].TrimEnd('.') + ".";
        }

        var where = json.Path is { Length: > 0 } path ? $" at {path}" : "";
        var position = json.LineNumber is { } line ? $" (line {line + 1}, byte {json.BytePositionInLine + 1})" : "";
        return $"The request body is not valid JSON for this endpoint{where}{position}.";
    }
}
