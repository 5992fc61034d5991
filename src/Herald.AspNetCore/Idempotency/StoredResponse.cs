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

    public static StoredResponse FromBytes(ReadOnlySpan<byte> bytes) =>
        JsonSerializer.Deserialize(bytes, StoredResponseJson.Default.StoredResponse)
        ?? throw new HeraldException("A stored idempotent response is empty.");
}

[JsonSerializable(typeof(StoredResponse))]
internal sealed partial class StoredResponseJson : JsonSerializerContext;
