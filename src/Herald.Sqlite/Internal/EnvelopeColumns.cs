using Herald.Sqlite.EventSourcing;
using System.Collections.Frozen;
using Herald.Internal;
using Herald.Messages;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Internal;

/// <summary>
/// The one mapping of the envelope onto SQLite columns, shared by the events, the queue, the outbox and the dead letters:
/// <see cref="Names"/> in this order, the id as 16 big-endian bytes, the time as UTC ticks plus an offset in minutes, headers
/// as a JSON object or NULL (<see cref="EventRows"/> holds those encodings). Tables that keep the envelope whole (outbox,
/// dead letters) add its delivery attempt (<see cref="StoredNames"/>).
/// </summary>
internal static class EnvelopeColumns
{
    /// <summary>The envelope's columns, in the order <see cref="Bind"/> and <see cref="Read{TRow}"/> use.</summary>
    public const string Names =
        "message_id, message_type, schema_version, time, time_offset, correlation_id, causation_id, user_id, partition_key, " +
        "content_type, headers, body";

    /// <summary>How many columns <see cref="Names"/> lists.</summary>
    public const int Count = 12;

    /// <summary>The envelope's columns and its delivery attempt, as the outbox and dead-letter tables store it.</summary>
    public const string StoredNames = Names + ", delivery_attempt";

    /// <summary>Binds the envelope to parameters <paramref name="first"/> .. <paramref name="first"/> + 11.</summary>
    public static void Bind(RawStatement statement, int first, Envelope envelope)
    {
        Span<byte> id = stackalloc byte[16];
        envelope.MessageId.TryWriteBytes(id, bigEndian: true, out _);
        statement.Bind(first, id);
        statement.Bind(first + 1, envelope.MessageType);
        statement.Bind(first + 2, envelope.SchemaVersion);
        BindTime(statement, first + 3, envelope.Time);
        statement.Bind(first + 5, envelope.CorrelationId);
        statement.Bind(first + 6, envelope.CausationId);
        statement.Bind(first + 7, envelope.UserId);
        statement.Bind(first + 8, envelope.PartitionKey);
        statement.Bind(first + 9, envelope.ContentType);
        statement.Bind(first + 10, EventRows.HeadersJson(envelope.Headers));
        statement.Bind(first + 11, envelope.Body.Span);
    }

    /// <summary>
    /// Binds a time to parameter <paramref name="ticks"/> and its offset to the next, as every engine keeps it (in UTC, to
    /// the microsecond: offset 0), so a row reads back the same on each; NULL to both when there is none.
    /// </summary>
    public static void BindTime(RawStatement statement, int ticks, DateTimeOffset? time)
    {
        statement.Bind(ticks, StoredTime.Of(time)?.UtcTicks);
        statement.Bind(ticks + 1, time is null ? null : 0L);
    }

    /// <summary>Binds the envelope and its delivery attempt to parameters <paramref name="first"/> .. <paramref name="first"/> + 12.</summary>
    public static void BindStored(RawStatement statement, int first, Envelope envelope)
    {
        Bind(statement, first, envelope);
        statement.Bind(first + Count, envelope.DeliveryAttempt);
    }

    /// <summary>Reads the envelope from columns <paramref name="first"/> .. <paramref name="first"/> + 11 of a row.</summary>
    public static Envelope Read<TRow>(TRow row, int first, int deliveryAttempt)
        where TRow : IColumnReader => new()
    {
        MessageId = row.Guid(first),
        MessageType = row.Text(first + 1),
        SchemaVersion = (int)row.Int64(first + 2),
        Time = EventRows.ToTime(row.Int64(first + 3), (int)row.Int64(first + 4)),
        CorrelationId = NullableText(row, first + 5),
        CausationId = NullableText(row, first + 6),
        UserId = NullableText(row, first + 7),
        PartitionKey = NullableText(row, first + 8),
        ContentType = row.Text(first + 9),
        Headers = row.IsNull(first + 10) ? FrozenDictionary<string, string>.Empty : EventRows.ParseHeaders(row.Text(first + 10)),
        Body = row.Bytes(first + 11),
        DeliveryAttempt = deliveryAttempt,
    };

    /// <summary>What still reads of the envelope in columns <paramref name="first"/> .. <paramref name="first"/> + 11 when <see cref="Read"/> failed (see <see cref="Salvage"/>).</summary>
    public static Envelope Salvaged<TRow>(TRow row, int first, int deliveryAttempt, DateTimeOffset now)
        where TRow : IColumnReader => Salvage.Envelope(
            deliveryAttempt,
            now,
            () => row.Guid(first),
            () => row.Text(first + 1),
            () => EventRows.ToTime(row.Int64(first + 3), (int)row.Int64(first + 4)),
            () => row.IsNull(first + 8) ? null : row.Text(first + 8),
            () => row.Bytes(first + 11));

    /// <summary>Reads the envelope and its delivery attempt from columns <paramref name="first"/> .. <paramref name="first"/> + 12.</summary>
    public static Envelope ReadStored(SqliteDataReader row, int first) =>
        Read(new DataReaderColumns(row), first, row.GetInt32(first + Count));

    public static string? Text(SqliteDataReader row, int ordinal) => row.IsDBNull(ordinal) ? null : row.GetString(ordinal);

    public static DateTimeOffset? Time(SqliteDataReader row, int ticks, int offset) =>
        row.IsDBNull(ticks) ? null : EventRows.ToTime(row.GetInt64(ticks), row.GetInt32(offset));

    private static string? NullableText<TRow>(TRow row, int column)
        where TRow : IColumnReader => row.IsNull(column) ? null : row.Text(column);
}

/// <summary>The columns of a row, whichever API read it (<see cref="RawStatement"/> on the writer, a data reader elsewhere).</summary>
internal interface IColumnReader
{
    bool IsNull(int column);

    long Int64(int column);

    string Text(int column);

    /// <summary>A blob as a new array.</summary>
    byte[] Bytes(int column);

    /// <summary>A 16-byte big-endian id.</summary>
    Guid Guid(int column);
}

/// <summary>A <see cref="SqliteDataReader"/>'s current row as an <see cref="IColumnReader"/> (a struct: no allocation).</summary>
internal readonly struct DataReaderColumns(SqliteDataReader reader) : IColumnReader
{
    public bool IsNull(int column) => reader.IsDBNull(column);

    public long Int64(int column) => reader.GetInt64(column);

    public string Text(int column) => reader.GetString(column);

    public byte[] Bytes(int column) => reader.GetFieldValue<byte[]>(column);

    public Guid Guid(int column) => EventRows.ToGuid(reader.GetFieldValue<byte[]>(column));
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
