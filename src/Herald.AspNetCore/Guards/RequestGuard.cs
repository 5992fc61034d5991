using System.Text;
using Herald.AspNetCore.Internal;
using Herald.AspNetCore.Problems;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;

namespace Herald.AspNetCore.Guards;

/// <summary>Answers a body that is not JSON with 415 and one over the size limit with 413, before the endpoint reads it.</summary>
internal sealed class RequestGuard(IOptions<HeraldHttpOptions> options, ILogger<RequestGuard> logger)
{
    /// <summary>True when the request may go on; otherwise the problem has been written.</summary>
    public async ValueTask<bool> CheckAsync(HttpContext context, JsonBodyMetadata metadata)
    {
        var request = context.Request;
        var hasBody = request.ContentLength > 0 || (request.ContentLength is null && request.Headers.TransferEncoding.Count > 0) || request.ContentType is not null;
        if (hasBody && !request.HasJsonContentType())
        {
            var got = string.IsNullOrEmpty(request.ContentType) ? "no Content-Type" : $"'{request.ContentType}'";
            return await RejectAsync(
                context,
                StatusCodes.Status415UnsupportedMediaType,
                "The request's content type is not supported.",
                $"This endpoint reads a JSON body (Content-Type: application/json); the request sent {got}.").ConfigureAwait(false);
        }

        if (hasBody && UnreadableCharset(request) is { } charset)
        {
            return await RejectAsync(
                context,
                StatusCodes.Status415UnsupportedMediaType,
                "The request's content type is not supported.",
                $"This endpoint cannot read a body in the charset '{charset}'; send JSON in UTF-8 (Content-Type: application/json).").ConfigureAwait(false);
        }

        var limit = metadata.MaxBodyBytes ?? options.Value.MaxRequestBodyBytes;
        if (!await RequestBody.BufferAsync(context, limit, hash: null).ConfigureAwait(false))
        {
            return await RejectAsync(
                context,
                StatusCodes.Status413PayloadTooLarge,
                "The request body is too large.",
                $"This endpoint reads at most {limit} bytes of body.").ConfigureAwait(false);
        }

        return true;
    }

    // The body binder decodes any charset Encoding knows, and throws an InvalidOperationException (a 500) on any other.
    private static string? UnreadableCharset(HttpRequest request)
    {
        if (!MediaTypeHeaderValue.TryParse(request.ContentType, out var mediaType) || !mediaType.Charset.HasValue)
        {
            return null;
        }

        var charset = HeaderUtilities.RemoveQuotes(mediaType.Charset);
        if (!charset.Equals("utf-8", StringComparison.OrdinalIgnoreCase))
        {
            try
            {
                _ = Encoding.GetEncoding(charset.Value!); // "" throws too
            }
            catch (Exception ex) when (ex is ArgumentException or NotSupportedException)
            {
                return charset.Value;
            }
        }

        if (charset.Length != mediaType.Charset.Length)
        {
            // RFC 9110 8.3.1: charset="utf-8" is charset=utf-8, but the binder looks the name up quotes and all, and fails.
            mediaType.Charset = charset;
            request.ContentType = mediaType.ToString();
        }

        return null;
    }

    private async ValueTask<bool> RejectAsync(HttpContext context, int status, string title, string detail)
    {
        Log.RequestRejected(logger, context.Request.Method, context.Request.Path.Value ?? "/", status, detail);
        await HttpProblems.WriteAsync(context, status, title, detail).ConfigureAwait(false);
        return false;
    }
}
