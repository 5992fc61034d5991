using System.Text.Json;
using System.Text.Json.Serialization;

namespace Herald.AspNetCore.Idempotency;

/// <summary>The first completed response of an idempotency key, with the fingerprint of the request that produced it.</summary>
internal sealed record StoredResponse
{
    [JsonPropertyName("v")]
    public int Version { get; init; } = 1;

    [JsonPropertyName("fingerprint")]
    public required string Fingerprint { get; init; }

    [JsonPropertyName("status")]
    public required int Status { get; init; }

    [JsonPropertyName("contentType")]
    public string? ContentType { get; init; }

    [JsonPropertyName("location")]
    public string? Location { get; init; }

    [JsonPropertyName("body")]
    public required byte[] Body { get; init; }

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
            ? stored
            : null;
    }

    private static bool IsHeaderValue(string? value) => value is null || !value.Any(char.IsControl);
}

[JsonSerializable(typeof(StoredResponse))]
internal sealed partial class StoredResponseJson : JsonSerializerContext;
