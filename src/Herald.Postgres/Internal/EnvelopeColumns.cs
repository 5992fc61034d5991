using System.Buffers;
using System.Collections.Frozen;
using System.Runtime.InteropServices;
using System.Text.Json;
using Herald.Internal;
using Herald.Messages;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.Internal;

/// <summary>
/// The one mapping of the envelope onto PostgreSQL columns, shared by the events, the queue, the outbox and the dead
/// letters: <see cref="Names"/> in this order, headers as a JSON object (or NULL when there are none), the body as bytea.
/// Tables that keep the envelope whole (outbox, dead letters) add its delivery attempt (<see cref="StoredNames"/>). For
/// many rows at once, <see cref="EnvelopeArrays"/> holds the same columns as arrays.
/// </summary>
internal static class EnvelopeColumns
{
    /// <summary>The envelope's columns.</summary>
    public const string Names =
        "message_id, message_type, schema_version, time, correlation_id, causation_id, user_id, partition_key, content_type, headers, body";

    /// <summary>How many columns <see cref="Names"/> lists.</summary>
    public const int Count = 11;

    /// <summary>The envelope's columns and its delivery attempt, as the outbox and dead-letter tables store it (migration 2).</summary>
    public const string StoredNames = Names + ", delivery_attempt";

    /// <summary>How many columns <see cref="StoredNames"/> lists.</summary>
    public const int StoredCount = Count + 1;

    /// <summary>The positional parameters <c>$1, $2, …, $count</c> of a row's VALUES list.</summary>
    public static string Placeholders(int count) => string.Join(", ", Enumerable.Range(1, count).Select(i => "$" + i));

    private static readonly IReadOnlyDictionary<string, string> NoHeaders = FrozenDictionary<string, string>.Empty;

    /// <summary>Adds the <see cref="Count"/> parameters of <see cref="Names"/>.</summary>
    public static void Add(NpgsqlParameterCollection parameters, Envelope envelope) => Add(parameters, envelope, envelope.CorrelationId);

    /// <summary>Adds the <see cref="Count"/> parameters of <see cref="Names"/>, with the correlation id as already read.</summary>
    public static void Add(NpgsqlParameterCollection parameters, Envelope envelope, string? correlationId)
    {
        parameters.Add(new NpgsqlParameter<Guid> { TypedValue = envelope.MessageId, NpgsqlDbType = NpgsqlDbType.Uuid });
        parameters.Add(Text(envelope.MessageType));
        parameters.Add(Int(envelope.SchemaVersion));
        parameters.Add(Time(StoredTime.Of(envelope.Time)));
        parameters.Add(Text(correlationId));
        parameters.Add(Text(envelope.CausationId));
        parameters.Add(Text(envelope.UserId));
        parameters.Add(Text(envelope.PartitionKey));
        parameters.Add(Text(envelope.ContentType));
        parameters.Add(new NpgsqlParameter { Value = (object?)FormatHeaders(envelope.Headers) ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Jsonb });
        parameters.Add(new NpgsqlParameter<byte[]> { TypedValue = BodyArray(envelope.Body), NpgsqlDbType = NpgsqlDbType.Bytea });
    }

    /// <summary>Adds the <see cref="StoredCount"/> parameters of <see cref="StoredNames"/>.</summary>
    public static void AddStored(NpgsqlParameterCollection parameters, Envelope envelope)
    {
        Add(parameters, envelope);
        parameters.Add(Int(envelope.DeliveryAttempt));
    }

    /// <summary>Reads the envelope from the columns of <see cref="Names"/>, starting at <paramref name="first"/>.</summary>
    public static Envelope Read(NpgsqlDataReader reader, int first, int deliveryAttempt) => new()
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
        Headers = reader.IsDBNull(first + 9) ? NoHeaders : ParseHeaders(reader.GetString(first + 9)),
        Body = reader.GetFieldValue<byte[]>(first + 10),
        DeliveryAttempt = deliveryAttempt,
    };

    /// <summary>What still reads of the envelope in the columns of <see cref="Names"/> when <see cref="Read"/> failed (see <see cref="Salvage"/>).</summary>
    public static Envelope Salvaged(NpgsqlDataReader reader, int first, int deliveryAttempt, DateTimeOffset now) => Salvage.Envelope(
        deliveryAttempt,
        now,
        () => reader.GetGuid(first),
        () => reader.GetString(first + 1),
        () => reader.GetFieldValue<DateTimeOffset>(first + 3),
        () => reader.IsDBNull(first + 7) ? null : reader.GetString(first + 7),
        () => reader.GetFieldValue<byte[]>(first + 10));

    /// <summary>Reads the envelope from the columns of <see cref="StoredNames"/>, starting at <paramref name="first"/>.</summary>
    public static Envelope ReadStored(NpgsqlDataReader reader, int first) => Read(reader, first, reader.GetInt32(first + Count));

    /// <summary>
    /// The headers as a JSON object, or null when there are none (most messages), so reads skip parsing. jsonb refuses a NUL
    /// character in a string, so headers holding one are written as an array instead: each name, then its value, as the
    /// array of its pieces between NULs (<c>"a\0b"</c> is <c>["a","b"]</c>), which <see cref="ParseHeaders"/> joins back.
    /// </summary>
    public static string? FormatHeaders(IReadOnlyDictionary<string, string> headers)
    {
        if (headers.Count == 0)
        {
            return null;
        }

        var withNul = headers.Any(h => h.Key.Contains('\0', StringComparison.Ordinal) || h.Value.Contains('\0', StringComparison.Ordinal));
        var buffer = new ArrayBufferWriter<byte>(64);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            if (withNul)
            {
                writer.WriteStartArray();
                foreach (var (name, value) in headers)
                {
                    WritePieces(writer, name);
                    WritePieces(writer, value);
                }

                writer.WriteEndArray();
            }
            else
            {
                writer.WriteStartObject();
                foreach (var (name, value) in headers)
                {
                    writer.WriteString(name, value);
                }

                writer.WriteEndObject();
            }
        }

        return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);

        static void WritePieces(Utf8JsonWriter writer, string text)
        {
            writer.WriteStartArray();
            foreach (var piece in text.Split('\0'))
            {
                writer.WriteStringValue(piece);
            }

            writer.WriteEndArray();
        }
    }

    /// <summary>Headers from their JSON object, or from the array <see cref="FormatHeaders"/> writes for headers holding NUL.</summary>
    public static Dictionary<string, string> ParseHeaders(string json)
    {
        using var document = JsonDocument.Parse(json);
        var headers = new Dictionary<string, string>(StringComparer.Ordinal);
        var root = document.RootElement;
        if (root.ValueKind == JsonValueKind.Array)
        {
            if (root.GetArrayLength() % 2 != 0)
            {
                throw new JsonException("Headers stored as an array hold a name without its value.");
            }

            for (var i = 0; i < root.GetArrayLength(); i += 2)
            {
                headers[Joined(root[i])] = Joined(root[i + 1]);
            }

            return headers;
        }

        foreach (var property in root.EnumerateObject())
        {
            headers[property.Name] = property.Value.GetString() ?? "";
        }

        return headers;

        static string Joined(JsonElement pieces) => string.Join('\0', pieces.EnumerateArray().Select(p => p.GetString()));
    }

    /// <summary>The body as an array, without a copy when the memory already is a whole array.</summary>
    public static byte[] BodyArray(ReadOnlyMemory<byte> body) =>
        MemoryMarshal.TryGetArray(body, out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
            ? segment.Array
            : body.ToArray();

    public static NpgsqlParameter Text(string? value) => new() { Value = (object?)value ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text };

    public static NpgsqlParameter Time(DateTimeOffset? value) =>
        new() { Value = value is { } time ? time.UtcDateTime : DBNull.Value, NpgsqlDbType = NpgsqlDbType.TimestampTz };

    /// <summary>
    /// A time a filter compares stored times with: taken up to the next whole microsecond when it lies between two. Stored
    /// times are whole microseconds, so each compares with it as with the bound itself; PostgreSQL would cut the bound
    /// instead, so a time stored in the bound's microsecond, before it, would pass "at or after" and fail "before".
    /// </summary>
    public static NpgsqlParameter TimeBound(DateTimeOffset? value)
    {
        if (value is not { } bound)
        {
            return Time(null);
        }

        var cut = StoredTime.Of(bound);
        if (cut < bound)
        {
            // Within the last microsecond of time, the end of time (which PostgreSQL keeps as infinity) is the next one.
            cut = DateTimeOffset.MaxValue.UtcTicks - cut.UtcTicks > TimeSpan.TicksPerMicrosecond ? cut.AddTicks(TimeSpan.TicksPerMicrosecond) : DateTimeOffset.MaxValue;
        }

        return Time(cut);
    }

    public static NpgsqlParameter Id(Guid? value) => new() { Value = value is { } id ? id : DBNull.Value, NpgsqlDbType = NpgsqlDbType.Uuid };

    public static NpgsqlParameter<int> Int(int value) => new() { TypedValue = value, NpgsqlDbType = NpgsqlDbType.Integer };

    public static string? NullableText(NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);

    public static DateTimeOffset? NullableTime(NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetFieldValue<DateTimeOffset>(ordinal);
}
