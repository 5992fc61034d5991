using System.Text.Json;

namespace Herald.Sagas;

/// <summary>How every saga keeps its data in <see cref="SagaInstance.Data"/>: JSON with the web defaults.</summary>
internal static class SagaData
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public static byte[] Serialize<TData>(TData data) => JsonSerializer.SerializeToUtf8Bytes(data, Json);

    public static TData Deserialize<TData>(ReadOnlyMemory<byte> data) =>
        JsonSerializer.Deserialize<TData>(data.Span, Json) ?? throw new InvalidOperationException($"The saga's stored data is null; expected a {typeof(TData).Name}.");
}
