using System.Text.Json;

namespace Herald.Sagas;

/// <summary>How every saga keeps its data in <see cref="SagaInstance.Data"/>: JSON with the web defaults.</summary>
internal static class SagaData
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public static byte[] Serialize<TData>(TData data) => JsonSerializer.SerializeToUtf8Bytes(data, Json);

    public static TData Deserialize<TData>(ReadOnlyMemory<byte> data) =>
        JsonSerializer.Deserialize<TData>(data.Span, Json) ?? throw new InvalidOperationException($"The saga's stored data is null; expected a {typeof(TData).Name}.");

    /// <summary>
    /// Reads <paramref name="instance"/>'s data. Data stored by an earlier shape of <typeparamref name="TData"/> reads the
    /// same on every attempt, so retrying cannot help: it throws <see cref="SagaDataUnreadableException"/>, whose reason
    /// names the instance, not only a JSON path.
    /// </summary>
    public static TData Read<TData>(SagaInstance instance)
    {
        try
        {
            return Deserialize<TData>(instance.Data);
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or NotSupportedException)
        {
            throw new SagaDataUnreadableException(
                $"Saga '{instance.SagaType}' instance '{instance.Id}' (state '{instance.State}') holds data that cannot be read as {typeof(TData).Name}: {ex.Message}", ex);
        }
    }
}

/// <summary>An instance's stored data does not read as the saga's data type (see <see cref="SagaData.Read{TData}"/>).</summary>
internal sealed class SagaDataUnreadableException(string message, Exception innerException) : Exception(message, innerException);
