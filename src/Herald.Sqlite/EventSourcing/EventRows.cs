using Herald.Sqlite.Internal;
using System.Buffers;
using System.Collections.Frozen;
using System.Text;
using System.Text.Json;
using Herald.EventSourcing;
using Herald.Internal;
using Herald.Messages;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.EventSourcing;

/// <summary>How an event maps onto its row: ids as 16 big-endian bytes (so they read like the Guid in SQL tools), times as UTC ticks plus an offset in minutes, headers as a JSON object or NULL.</summary>
internal static class EventRows
{
    /// <summary>The columns every event read selects, in the order <see cref="Read"/> expects (<c>e</c> = events, <c>s</c> = streams); the envelope's are those of <see cref="EnvelopeColumns.Names"/>.</summary>
    public const string Columns =
        "e.position, s.name, e.version, e.recorded_at, e.event_id, e.event_type, e.schema_version, e.time, e.time_offset, " +
        "e.correlation_id, e.causation_id, e.user_id, e.partition_key, e.content_type, e.headers, e.body";

    /// <summary>Reads an event row of <see cref="Columns"/>; a row another tool changed so that it no longer reads is an <see cref="UnreadableEventException"/>.</summary>
    public static RecordedEvent Read(SqliteDataReader reader)
    {
        var position = reader.GetInt64(0);
        try
        {
            return new(
                reader.GetString(1),
                reader.GetInt64(2),
                position,
                ToTime(reader.GetInt64(3), 0),
                EnvelopeColumns.Read(new DataReaderColumns(reader), 4, deliveryAttempt: 0));
        }
        catch (Exception ex)
        {
            // What still reads of the row goes with the failure, for a subscription that dead-letters it.
            var row = new DataReaderColumns(reader);
            var recordedAt = Salvage.Read(() => ToTime(reader.GetInt64(3), 0), DateTimeOffset.UnixEpoch);
            throw new UnreadableEventException(position, Salvage.Read(() => reader.GetString(1), null), EnvelopeColumns.Salvaged(row, 4, deliveryAttempt: 1, recordedAt), ex);
        }
    }

    /// <summary>The events of a read page's query in its order, stopping once their bodies reach the page's byte budget (<see cref="EventPages.AddToPage"/>).</summary>
    public static List<RecordedEvent> ReadPage(SqliteCommand command)
    {
        using var rows = command.ExecuteReader();
        var page = new List<RecordedEvent>();
        var bytes = 0L;
        while (rows.Read() && !EventPages.AddToPage(page, Read(rows), ref bytes))
        {
        }

        return page;
    }

    public static Guid ToGuid(byte[] bytes) => new(bytes, bigEndian: true);

    public static DateTimeOffset ToTime(long utcTicks, int offsetMinutes) =>
        new DateTimeOffset(utcTicks, TimeSpan.Zero).ToOffset(TimeSpan.FromMinutes(offsetMinutes));

    public static string? HeadersJson(IReadOnlyDictionary<string, string> headers)
    {
        if (headers.Count == 0)
        {
            return null;
        }

        var buffer = new ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            foreach (var (name, value) in headers)
            {
                writer.WriteString(name, value);
            }

            writer.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    public static IReadOnlyDictionary<string, string> ParseHeaders(string json)
    {
        var headers = new Dictionary<string, string>(StringComparer.Ordinal);
        var reader = new Utf8JsonReader(Encoding.UTF8.GetBytes(json));
        reader.Read();
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var name = reader.GetString()!;
            reader.Read();
            headers[name] = reader.GetString()!;
        }

        return headers.ToFrozenDictionary(StringComparer.Ordinal);
    }
}
