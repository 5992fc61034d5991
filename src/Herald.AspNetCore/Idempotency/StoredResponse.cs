using System.Collections.Frozen;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http;
using Microsoft.Net.Http.Headers;

namespace Herald.AspNetCore.Idempotency;

/// <summary>The first completed response of an idempotency key, with the fingerprint of the request that produced it.</summary>
internal sealed record StoredResponse
{
    [JsonPropertyName("v")]
    public int Version { get; init; } = 1;

    /// <summary>
    /// The SHA-256 of the request's method, target and body: all a response stored by an earlier version has. Still written
    /// beside <see cref="FullFingerprint"/>, so a node of that version replays what this one stored during a rolling upgrade.
    /// </summary>
    [JsonPropertyName("fingerprint")]
    public required string Fingerprint { get; init; }

    /// <summary>The SHA-256 of the request's method, target, body and media type; null in a response an earlier version stored.</summary>
    [JsonPropertyName("fullFingerprint")]
    public string? FullFingerprint { get; init; }

    [JsonPropertyName("status")]
    public required int Status { get; init; }

    [JsonPropertyName("contentType")]
    public string? ContentType { get; init; }

    [JsonPropertyName("location")]
    public string? Location { get; init; }

    /// <summary>The response's <see cref="RepresentationHeaders"/> besides those two; null in a response an earlier version stored.</summary>
    [JsonPropertyName("headers")]
    public Dictionary<string, string[]>? Headers { get; init; }

    [JsonPropertyName("body")]
    public required byte[] Body { get; init; }

    /// <summary>
    /// The headers that describe the stored body and are replayed with it (besides <c>Content-Type</c> and <c>Location</c>):
    /// without <c>Content-Encoding</c> a gzip body is corrupt to its client. Never a cookie (the first client's), nor a
    /// header about one connection or message (hop-by-hop, <c>Date</c>, <c>Server</c>, <c>Content-Length</c>,
    /// <c>Transfer-Encoding</c>), which the server writes afresh.
    /// </summary>
    public static readonly FrozenSet<string> RepresentationHeaders = FrozenSet.Create(
        StringComparer.OrdinalIgnoreCase,
        HeaderNames.CacheControl,
        HeaderNames.ContentDisposition,
        HeaderNames.ContentEncoding,
        HeaderNames.ContentLanguage,
        HeaderNames.ContentLocation,
        HeaderNames.ETag,
        HeaderNames.Expires,
        HeaderNames.LastModified,
        HeaderNames.Vary);

    /// <summary>
    /// Whether a response of this status is stored and replayed. A 5xx is not, nor a client error that says to come back
    /// later (408 Request Timeout, 409 Conflict, 423 Locked, 425 Too Early, 429 Too Many Requests): its key is released, so
    /// the client's retry with the same key runs the request again instead of getting that refusal for the key's lifetime.
    /// </summary>
    public static bool IsStored(int status) => status < 500 && status is not (
        StatusCodes.Status408RequestTimeout
        or StatusCodes.Status409Conflict
        or StatusCodes.Status423Locked
        or 425 // Too Early (RFC 8470), which StatusCodes does not name
        or StatusCodes.Status429TooManyRequests);

    /// <summary>The <see cref="RepresentationHeaders"/> the response has, or null when it has none.</summary>
    public static Dictionary<string, string[]>? RepresentationOf(IHeaderDictionary headers)
    {
        Dictionary<string, string[]>? kept = null;
        foreach (var name in RepresentationHeaders)
        {
            if (headers.TryGetValue(name, out var values) && values.Count > 0)
            {
                (kept ??= new Dictionary<string, string[]>(StringComparer.OrdinalIgnoreCase))[name] = values.Where(v => v is not null).ToArray()!;
            }
        }

        return kept;
    }

    /// <summary>Sets the stored representation headers on <paramref name="headers"/>; any other name stored is ignored.</summary>
    public void ApplyHeaders(IHeaderDictionary headers)
    {
        if (Headers is null)
        {
            return;
        }

        foreach (var (name, values) in Headers)
        {
            if (RepresentationHeaders.Contains(name))
            {
                headers[name] = values;
            }
        }
    }

    public byte[] ToBytes() => JsonSerializer.SerializeToUtf8Bytes(this, StoredResponseJson.Default.StoredResponse);

    /// <summary>
    /// The stored response, or null when the bytes are not one this version stores (corrupted, or another format): such bytes
    /// are neither trusted nor replayed as some other response.
    /// </summary>
    public static StoredResponse? TryFromBytes(ReadOnlySpan<byte> bytes)
    {
        StoredResponse? stored;
        try
        {
            stored = JsonSerializer.Deserialize(bytes, StoredResponseJson.Default.StoredResponse);
        }
        catch (JsonException)
        {
            return null;
        }

        // Only 2xx-4xx responses are stored (a 5xx releases the key); a header value holds no control character (CR, LF).
        return stored is { Version: 1, Status: >= 200 and < 500 }
            && stored.Fingerprint is not null
            && stored.Body is not null
            && IsHeaderValue(stored.ContentType)
            && IsHeaderValue(stored.Location)
            && (stored.Headers is null || stored.Headers.Values.All(values => values is not null && values.All(IsHeaderValue)))
            ? stored
            : null;
    }

    private static bool IsHeaderValue(string? value) => value is null || !value.Any(char.IsControl);
}

[JsonSerializable(typeof(StoredResponse))]
internal sealed partial class StoredResponseJson : JsonSerializerContext;
