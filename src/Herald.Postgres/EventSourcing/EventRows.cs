using System.Buffers;
using System.Collections.Frozen;
using System.Runtime.InteropServices;
using System.Text.Json;
using Herald.EventSourcing;
using Herald.Messages;
using Npgsql;

namespace Herald.Postgres.EventSourcing;

/// <summary>Turns envelopes into column values and rows back into <see cref="RecordedEvent"/>s.</summary>
internal static class EventRows
{
    private static readonly IReadOnlyDictionary<string, string> NoHeaders = FrozenDictionary<string, string>.Empty;

    /// <summary>Reads the event columns of <see cref="EventStoreSql"/> starting at <paramref name="first"/>.</summary>
    public static RecordedEvent Read(NpgsqlDataReader reader, int first)
    {
        var envelope = new Envelope
        {
            MessageId = reader.GetGuid(first + 3),
            MessageType = reader.GetString(first + 4),
            SchemaVersion = reader.GetInt32(first + 5),
            Time = reader.GetFieldValue<DateTimeOffset>(first + 6),
            CorrelationId = reader.IsDBNull(first + 7) ? null : reader.GetString(first + 7),
            CausationId = reader.IsDBNull(first + 8) ? null : reader.GetString(first + 8),
            UserId = reader.IsDBNull(first + 9) ? null : reader.GetString(first + 9),
            PartitionKey = reader.IsDBNull(first + 10) ? null : reader.GetString(first + 10),
            ContentType = reader.GetString(first + 11),
            Headers = reader.IsDBNull(first + 12) ? NoHeaders : ParseHeaders(reader.GetString(first + 12)),
            Body = reader.GetFieldValue<byte[]>(first + 13),
        };

        return new RecordedEvent(
            reader.GetString(first + 1),
            reader.GetInt64(first + 2),
            reader.GetInt64(first),
            reader.GetFieldValue<DateTimeOffset>(first + 14),
            envelope);
    }

    /// <summary>The headers as a JSON object, or null when there are none (most events), so reads skip parsing.</summary>
    public static string? FormatHeaders(IReadOnlyDictionary<string, string> headers)
    {
        if (headers.Count == 0)
        {
            return null;
        }

        var buffer = new ArrayBufferWriter<byte>(64);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            foreach (var (name, value) in headers)
            {
                writer.WriteString(name, value);
            }

            writer.WriteEndObject();
        }

        return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>The body as an array, without a copy when the memory already is a whole array.</summary>
    public static byte[] BodyArray(ReadOnlyMemory<byte> body) =>
        MemoryMarshal.TryGetArray(body, out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
            ? segment.Array
            : body.ToArray();

    public static Dictionary<string, string> ParseHeaders(string json)
    {
        using var document = JsonDocument.Parse(json);
        var headers = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var property in document.RootElement.EnumerateObject())
        {
            headers[property.Name] = property.Value.GetString() ?? "";
        }

        return headers;
    }
}
