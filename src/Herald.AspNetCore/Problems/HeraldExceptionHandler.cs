using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Herald.Cqrs.Validation;
using Herald.EventSourcing;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Metadata;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.AspNetCore.Problems;

/// <summary>
/// Answers every exception that reaches <c>UseExceptionHandler()</c> with problem details: a validation failure 400 with
/// its first errors, an invalid stream name (an id the client sent) 400, a malformed or unreadable body 400/413/415 with
/// the reason, a concurrency conflict 409, the application's mapped exceptions their status, and anything else 500 without
/// its message.
/// </summary>
internal sealed partial class HeraldExceptionHandler(
    IOptions<HeraldHttpOptions> options,
    IOptions<Microsoft.AspNetCore.Http.Json.JsonOptions> json,
    ILogger<HeraldExceptionHandler> logger) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        // The body's type, so a JSON error can say what the member it reached takes (the exception handler middleware
        // clears the request's endpoint before it calls handlers, and keeps it in its feature).
        var endpoint = httpContext.Features.Get<IExceptionHandlerFeature>()?.Endpoint ?? httpContext.GetEndpoint();
        var body = endpoint?.Metadata.GetMetadata<IAcceptsMetadata>()?.RequestType;
        var problem = Describe(exception, options.Value, json.Value.SerializerOptions, body);
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

    internal static ProblemDetails Describe(Exception exception, HeraldHttpOptions options, JsonSerializerOptions serializer, Type? body)
    {
        var naming = serializer.PropertyNamingPolicy;
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
            case InvalidStreamNameException stream:
                // Usually an id the client sent (too long, empty, with whitespace): its fault, unlike other ArgumentExceptions.
                return new ProblemDetails
                {
                    Status = StatusCodes.Status400BadRequest,
                    Title = "The stream name is not valid.",
                    Detail = stream.Reason,
                };
            case BadHttpRequestException { InnerException: JsonException json } bad:
                // Listed by member as validation failures are, so a client shows both the same way; the detail says it in one line.
                return new HttpValidationProblemDetails(JsonErrors(json, serializer, body))
                {
                    Status = bad.StatusCode,
                    Title = "The request could not be read.",
                    Detail = JsonReason(json),
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
                    Detail = BindingReason(bad.Message) ?? bad.Message,
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

    // ASP.NET's binding failures name the parameter's CLR type ("Failed to bind parameter \"Nullable<int> pageSize\" from
    // \"x\"."); the client needs the parameter's name and what it takes. Null for any other message.
    internal static string? BindingReason(string message)
    {
        if (BindingFailure().Match(message) is not { Success: true } match)
        {
            return null;
        }

        var name = match.Groups["name"].Value;
        if (match.Groups["required"].Success)
        {
            return $"{name} is required.";
        }

        var type = match.Groups["type"].Value;
        var list = type.EndsWith("[]", StringComparison.Ordinal);
        type = type.TrimEnd('[', ']');
        if (type.StartsWith("Nullable<", StringComparison.Ordinal))
        {
            type = type["Nullable<".Length..^1];
        }

        var expected = Expected(type) ?? "a valid value";
        return list ? $"Every {name} must be {expected}." : $"{name} must be {expected}.";
    }

    // What a value of the type looks like to a client, by its C# name ("int", as ASP.NET's binding messages write it) or
    // its CLR name without namespace ("Int32", as the serializer's do); null for a type not listed.
    private static string? Expected(string type) => type switch
    {
        "int" or "long" or "short" or "byte" or "sbyte" or "uint" or "ulong" or "ushort" or "Int128" or "UInt128" or "BigInteger"
            or "Int32" or "Int64" or "Int16" or "Byte" or "SByte" or "UInt32" or "UInt64" or "UInt16" => "a whole number",
        "decimal" or "double" or "float" or "Half" or "Decimal" or "Double" or "Single" => "a number",
        "bool" or "Boolean" => "true or false",
        "string" or "String" or "char" or "Char" => "a string",
        "Guid" => "a GUID (such as 0190d6f0-3c8e-7b6a-9f1e-2d4c5b6a7e8f)",
        "DateTime" or "DateTimeOffset" => "a date and time (such as 2026-01-31T12:00:00Z)",
        "DateOnly" => "a date (such as 2026-01-31)",
        "TimeOnly" => "a time of day (such as 12:00:00)",
        "TimeSpan" => "a duration (such as 00:05:00)",
        _ => null,
    };

    // The serializer stops at the first error, so there is one entry (or one per missing member), keyed as validation
    // errors are: by the client's own JSON path without its "$." ("items[0].quantity"); "$" for the body as a whole.
    internal static Dictionary<string, string[]> JsonErrors(JsonException json, JsonSerializerOptions serializer, Type? body)
    {
        var at = MemberKey(json.Path);
        var message = json.Message;
        const string missing = "missing required properties including: ";
        var missingAt = message.IndexOf(missing, StringComparison.Ordinal);
        if (missingAt >= 0)
        {
            // "...including: 'orderId', 'quantity'." The names are the JSON names, inside the object the path points at.
            var errors = new Dictionary<string, string[]>(StringComparer.Ordinal);
            foreach (var quoted in message[(missingAt + missing.Length)..].TrimEnd('.').Split(", ", StringSplitOptions.RemoveEmptyEntries))
            {
                var member = quoted.Trim('\'');
                errors[at == "$" ? member : $"{at}.{member}"] = ["is required."];
            }

            return errors;
        }

        if (UnmappedMember().Match(message) is { Success: true } unmapped)
        {
            var member = unmapped.Groups["name"].Value;
            var key = at == "$" ? member : at == member || at.EndsWith("." + member, StringComparison.Ordinal) ? at : $"{at}.{member}";
            return new(StringComparer.Ordinal) { [key] = ["is not a member of this request."] };
        }

        string error;
        if (json.InnerException?.GetType().Name == "JsonReaderException")
        {
            var position = json.LineNumber is { } line ? $" (line {line + 1}, byte {json.BytePositionInLine + 1})" : "";
            error = $"is not valid JSON{position}.";
        }
        else
        {
            // The serializer's message names sometimes the member's type and sometimes the object holding it: the type
            // is found instead by following the path from the body's type, as the serializer saw it.
            error = body is not null && MemberType(serializer, body, json.Path) is { } type ? $"must be {Expected(serializer, type)}." : "is not a valid value here.";
        }

        return new(StringComparer.Ordinal) { [at] = [error] };
    }

    private static string MemberKey(string? path) => path switch
    {
        null or "" or "$" => "$",
        _ when path.StartsWith("$.", StringComparison.Ordinal) => path[2..],
        _ => path,
    };

    // The type the serializer reads at a path such as "$.lines[0].qty" or "$['odd name']", from the body's type; null
    // where the path leaves what its contracts describe.
    private static Type? MemberType(JsonSerializerOptions serializer, Type body, string? path)
    {
        if (string.IsNullOrEmpty(path) || path[0] != '$')
        {
            return null;
        }

        var type = body;
        var i = 1;
        while (i < path.Length)
        {
            var info = serializer.GetTypeInfo(type);
            string? name;
            if (path[i] == '.')
            {
                var end = path.IndexOfAny(['.', '['], i + 1);
                name = path[(i + 1)..(end < 0 ? path.Length : end)];
                i = end < 0 ? path.Length : end;
            }
            else if (path[i] == '[' && i + 1 < path.Length && path[i + 1] == '\'')
            {
                var end = path.IndexOf("']", i + 2, StringComparison.Ordinal);
                if (end < 0)
                {
                    return null;
                }

                name = path[(i + 2)..end];
                i = end + 2;
            }
            else if (path[i] == '[')
            {
                var end = path.IndexOf(']', i);
                if (end < 0)
                {
                    return null;
                }

                name = null;
                i = end + 1;
            }
            else
            {
                return null;
            }

            var next = (info.Kind, name) switch
            {
                (JsonTypeInfoKind.Object, not null) => info.Properties.FirstOrDefault(p => p.Name == name)?.PropertyType,
                (JsonTypeInfoKind.Dictionary, not null) => info.ElementType,
                (JsonTypeInfoKind.Enumerable, null) => info.ElementType,
                _ => null,
            };
            if (next is null)
            {
                return null;
            }

            type = next;
        }

        return type;
    }

    private static string Expected(JsonSerializerOptions serializer, Type type)
    {
        type = Nullable.GetUnderlyingType(type) ?? type;
        if (type.IsEnum)
        {
            return "one of the allowed values";
        }

        if (type.Namespace is "System" or "System.Numerics" && Expected(type.Name) is { } known)
        {
            return known;
        }

        return serializer.GetTypeInfo(type).Kind switch
        {
            JsonTypeInfoKind.Enumerable => "an array",
            JsonTypeInfoKind.Object or JsonTypeInfoKind.Dictionary => "an object",
            _ => "a valid value",
        };
    }

    [System.Text.RegularExpressions.GeneratedRegex(
        "^The JSON property '(?<name>[^']*)' could not be mapped to any \\.NET member", System.Text.RegularExpressions.RegexOptions.CultureInvariant)]
    private static partial System.Text.RegularExpressions.Regex UnmappedMember();

    [System.Text.RegularExpressions.GeneratedRegex(
        "^(?:Failed to bind parameter \"(?<type>[^\"]+) (?<name>[^\" ]+)\" from|(?<required>Required) parameter \"(?<type>[^\"]+) (?<name>[^\" ]+)\" was not provided)",
        System.Text.RegularExpressions.RegexOptions.CultureInvariant)]
    private static partial System.Text.RegularExpressions.Regex BindingFailure();

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
