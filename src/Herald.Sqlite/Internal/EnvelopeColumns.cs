using Herald.Messages;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Internal;

/// <summary>How an envelope maps onto the thirteen envelope columns the reliability tables share (the event rows' encoding).</summary>
internal static class EnvelopeColumns
{
    /// <summary>The columns, in the order <see cref="Bind"/> and <see cref="Read"/> use.</summary>
    public const string Names =
        "message_id, message_type, schema_version, time, time_offset, correlation_id, causation_id, user_id, partition_key, " +
        "content_type, headers, body, delivery_attempt";

    public const int Count = 13;

    /// <summary>Binds the envelope to parameters <paramref name="first"/> .. <paramref name="first"/> + 12.</summary>
    public static void Bind(RawStatement statement, int first, Envelope envelope)
    {
        statement.Bind(first, GuidBytes.Of(envelope.MessageId));
        statement.Bind(first + 1, envelope.MessageType);
        statement.Bind(first + 2, envelope.SchemaVersion);
        statement.Bind(first + 3, envelope.Time.UtcTicks);
        statement.Bind(first + 4, EventRows.OffsetMinutes(envelope.Time));
        statement.Bind(first + 5, envelope.CorrelationId);
        statement.Bind(first + 6, envelope.CausationId);
        statement.Bind(first + 7, envelope.UserId);
        statement.Bind(first + 8, envelope.PartitionKey);
        statement.Bind(first + 9, envelope.ContentType);
        statement.Bind(first + 10, EventRows.HeadersJson(envelope.Headers));
        statement.Bind(first + 11, envelope.Body.Span);
        statement.Bind(first + 12, envelope.DeliveryAttempt);
    }

    /// <summary>Reads the envelope from columns <paramref name="first"/> .. <paramref name="first"/> + 12 of a row.</summary>
    public static Envelope Read(SqliteDataReader row, int first)
    {
        var envelope = new Envelope
        {
            MessageId = EventRows.ToGuid(row.GetFieldValue<byte[]>(first)),
            MessageType = row.GetString(first + 1),
            SchemaVersion = row.GetInt32(first + 2),
            Time = EventRows.ToTime(row.GetInt64(first + 3), row.GetInt32(first + 4)),
            CorrelationId = Text(row, first + 5),
            CausationId = Text(row, first + 6),
            UserId = Text(row, first + 7),
            PartitionKey = Text(row, first + 8),
            ContentType = row.GetString(first + 9),
            Body = row.GetFieldValue<byte[]>(first + 11),
            DeliveryAttempt = row.GetInt32(first + 12),
        };
        return row.IsDBNull(first + 10) ? envelope : envelope with { Headers = EventRows.ParseHeaders(row.GetString(first + 10)) };
    }

    public static string? Text(SqliteDataReader row, int ordinal) => row.IsDBNull(ordinal) ? null : row.GetString(ordinal);

    public static DateTimeOffset? Time(SqliteDataReader row, int ticks, int offset) =>
        row.IsDBNull(ticks) ? null : EventRows.ToTime(row.GetInt64(ticks), row.GetInt32(offset));
}

/// <summary>Guids as 16 big-endian bytes, so byte order (SQLite's BLOB order) is <see cref="Guid.CompareTo(Guid)"/> order.</summary>
internal static class GuidBytes
{
    public static byte[] Of(Guid id)
    {
        var bytes = new byte[16];
        id.TryWriteBytes(bytes, bigEndian: true, out _);
        return bytes;
    }
}
