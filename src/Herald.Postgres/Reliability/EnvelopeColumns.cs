using Herald.Messages;
using Herald.Postgres.EventSourcing;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.Reliability;

/// <summary>The envelope's columns, shared by the dead-letter and outbox tables (migration 2).</summary>
internal static class EnvelopeColumns
{
    public const string Names =
        "message_id, message_type, schema_version, time, correlation_id, causation_id, user_id, partition_key, content_type, headers, body, delivery_attempt";

    public const int Count = 12;

    public static void Add(NpgsqlParameterCollection parameters, Envelope envelope)
    {
        parameters.Add(new NpgsqlParameter<Guid> { TypedValue = envelope.MessageId, NpgsqlDbType = NpgsqlDbType.Uuid });
        parameters.Add(Text(envelope.MessageType));
        parameters.Add(new NpgsqlParameter<int> { TypedValue = envelope.SchemaVersion, NpgsqlDbType = NpgsqlDbType.Integer });
        parameters.Add(Time(envelope.Time));
        parameters.Add(Text(envelope.CorrelationId));
        parameters.Add(Text(envelope.CausationId));
        parameters.Add(Text(envelope.UserId));
        parameters.Add(Text(envelope.PartitionKey));
        parameters.Add(Text(envelope.ContentType));
        parameters.Add(new NpgsqlParameter { Value = (object?)EventRows.FormatHeaders(envelope.Headers) ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Jsonb });
        parameters.Add(new NpgsqlParameter<byte[]> { TypedValue = EventRows.BodyArray(envelope.Body), NpgsqlDbType = NpgsqlDbType.Bytea });
        parameters.Add(new NpgsqlParameter<int> { TypedValue = envelope.DeliveryAttempt, NpgsqlDbType = NpgsqlDbType.Integer });
    }

    public static Envelope Read(NpgsqlDataReader reader, int first) => new()
    {
        MessageId = reader.GetGuid(first),
        MessageType = reader.GetString(first + 1),
        SchemaVersion = reader.GetInt32(first + 2),
        Time = reader.GetFieldValue<DateTimeOffset>(first + 3),
        CorrelationId = NullableText(reader, first + 4),
        CausationId = NullableText(reader, first + 5),
        UserId = NullableText(reader, first + 6),
        PartitionKey = NullableText(reader, first + 7),
        ContentType = reader.GetString(first + 8),
        Headers = reader.IsDBNull(first + 9) ? new Dictionary<string, string>(StringComparer.Ordinal) : EventRows.ParseHeaders(reader.GetString(first + 9)),
        Body = reader.GetFieldValue<byte[]>(first + 10),
        DeliveryAttempt = reader.GetInt32(first + 11),
    };

    public static NpgsqlParameter Text(string? value) => new() { Value = (object?)value ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text };

    public static NpgsqlParameter Time(DateTimeOffset? value) =>
        new() { Value = value is { } time ? time.UtcDateTime : DBNull.Value, NpgsqlDbType = NpgsqlDbType.TimestampTz };

    public static NpgsqlParameter Id(Guid? value) => new() { Value = value is { } id ? id : DBNull.Value, NpgsqlDbType = NpgsqlDbType.Uuid };

    public static NpgsqlParameter<int> Int(int value) => new() { TypedValue = value, NpgsqlDbType = NpgsqlDbType.Integer };

    public static string? NullableText(NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);

    public static DateTimeOffset? NullableTime(NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetFieldValue<DateTimeOffset>(ordinal);
}
