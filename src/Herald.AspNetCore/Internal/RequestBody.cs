using System.Buffers;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Herald.AspNetCore.Internal;

/// <summary>Reads a request body ahead of the endpoint (bounded), so guards can measure it and idempotency can hash it.</summary>
internal static class RequestBody
{
    private const int BufferThreshold = 64 * 1024;

    /// <summary>
    /// Buffers the body so the endpoint reads it again from the start, feeding it to <paramref name="hash"/>; false (nothing
    /// more read) as soon as it is longer than <paramref name="limit"/> bytes.
    /// </summary>
    public static async ValueTask<bool> BufferAsync(HttpContext context, long limit, IncrementalHash? hash)
    {
        var request = context.Request;
        if (request.ContentLength > limit)
        {
            return false;
        }

        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } size
            && (size.MaxRequestBodySize is null || size.MaxRequestBodySize > limit))
        {
            // The server stops a body that outgrows the limit while it arrives, not only once it is read here. Lowered only:
            // raised, a stricter limit the application gave the server let larger bodies through on guarded endpoints.
            size.MaxRequestBodySize = limit;
        }

        request.EnableBuffering(BufferThreshold);
        request.Body.Position = 0;
        var buffer = ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            long total = 0;
            int read;
            while ((read = await request.Body.ReadAsync(buffer, context.RequestAborted).ConfigureAwait(false)) > 0)
            {
                total += read;
                if (total > limit)
                {
                    return false;
                }

                hash?.AppendData(buffer, 0, read);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        request.Body.Position = 0;
        return true;
    }
}
