using System.Globalization;
using System.Text.Json;

namespace Herald.Streams.Topology;

/// <summary>Turns a store's in-memory values into the JSON a durable state store keeps, and back.</summary>
internal sealed class StateCodec(Func<object, string> encode, Func<string, object> decode)
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerOptions.Web) { IncludeFields = true };

    public string Encode(object value) => encode(value);

    public object Decode(string json) => decode(json);

    public static StateCodec For<T>() => new(
        value => JsonSerializer.Serialize((T)value, Json),
        json => JsonSerializer.Deserialize<T>(json, Json) ?? throw new JsonException($"State of type {typeof(T).Name} read as JSON null."));

    /// <summary>The state key of a grouping key: its JSON, so any serializable key works and decodes back.</summary>
    public static string Key<TKey>(TKey key) => key is string s ? JsonSerializer.Serialize(s) : JsonSerializer.Serialize(key, Json);

    public static TKey DecodeKey<TKey>(string json) => JsonSerializer.Deserialize<TKey>(json, Json)!;

    /// <summary>The state key of one window of a key: the key's JSON, '@', the window start in ticks.</summary>
    public static string WindowKey(string key, long start) => key + "@" + start.ToString(CultureInfo.InvariantCulture);

    public static (string Key, long Start) SplitWindowKey(string stateKey)
    {
        var at = stateKey.LastIndexOf('@');
        return (stateKey[..at], long.Parse(stateKey.AsSpan(at + 1), CultureInfo.InvariantCulture));
    }
}
