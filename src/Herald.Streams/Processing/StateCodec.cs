using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Herald.EventSourcing;

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

    // Writes strings as the state key's JSON does, but refuses half of a surrogate pair instead of writing U+FFFD for it.
    private static readonly JsonSerializerOptions Strict = new(Json) { Converters = { new StrictStringConverter() } };

    /// <summary>
    /// The state key of a grouping key: its JSON, so any serializable key works and decodes back. A key holding half of a
    /// surrogate pair (text cut inside an emoji) is refused with a <see cref="StreamKeyException"/> naming
    /// <paramref name="operatorName"/>: JSON writes every such half as U+FFFD, so distinct keys would share one entry.
    /// </summary>
    public static string Key<TKey>(TKey key, string operatorName) => KeyOrNull(key) ?? throw new StreamKeyException(
        $"'{operatorName}' cannot keep a key holding half of a surrogate pair (as when text is cut inside an emoji): its JSON would write it as U+FFFD, " +
        $"so it would share the state of every key that differs from it only there ({(key is string s ? StreamName.Printable(s) : typeof(TKey).Name)}).",
        operatorName);

    /// <summary>The state key of <paramref name="key"/> as <see cref="Key"/> makes it, or null when it is refused (no state holds it).</summary>
    public static string? KeyOrNull<TKey>(TKey key)
    {
        var json = key is string s ? JsonSerializer.Serialize(s) : JsonSerializer.Serialize(key, Json);

        // JSON escapes all but ASCII, so a U+FFFD in the key, written for half a pair or given, reads as this escape.
        return json.Contains(@"\uFFFD", StringComparison.Ordinal) && HoldsUnpairedSurrogate(key) ? null : json;
    }

    private static bool HoldsUnpairedSurrogate<TKey>(TKey key)
    {
        if (key is string s)
        {
            return StreamName.HoldsUnpairedSurrogate(s);
        }

        try
        {
            JsonSerializer.Serialize(key, Strict);
            return false;
        }
        catch (UnpairedSurrogateException)
        {
            return true;
        }
    }

    public static TKey DecodeKey<TKey>(string json) => JsonSerializer.Deserialize<TKey>(json, Json)!;

    /// <summary>The state key of one window of a key: the key's JSON, '@', the window start in ticks.</summary>
    public static string WindowKey(string key, long start) => key + "@" + start.ToString(CultureInfo.InvariantCulture);

    public static (string Key, long Start) SplitWindowKey(string stateKey)
    {
        var at = stateKey.LastIndexOf('@');
        return (stateKey[..at], long.Parse(stateKey.AsSpan(at + 1), CultureInfo.InvariantCulture));
    }

    private sealed class UnpairedSurrogateException : Exception;

    private sealed class StrictStringConverter : JsonConverter<string>
    {
        public override string? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetString();

        public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options) => writer.WriteStringValue(Checked(value));

        public override string ReadAsPropertyName(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetString()!;

        public override void WriteAsPropertyName(Utf8JsonWriter writer, string value, JsonSerializerOptions options) => writer.WritePropertyName(Checked(value));

        private static string Checked(string value) => StreamName.HoldsUnpairedSurrogate(value) ? throw new UnpairedSurrogateException() : value;
    }
}
