using Herald.Internal;
using Herald.Messages;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.Internal;

/// <summary>
/// The columns of <see cref="EnvelopeColumns.Names"/> for many envelopes, one array per column, for statements that
/// <c>unnest</c> them (grouped appends and sends): a struct, so holding one costs only its arrays.
/// </summary>
internal readonly struct EnvelopeArrays
{
    public EnvelopeArrays(int count)
    {
        Ids = new Guid[count];
        Types = new string[count];
        SchemaVersions = new int[count];
        Times = new DateTime[count];
        CorrelationIds = new string?[count];
        CausationIds = new string?[count];
        UserIds = new string?[count];
        PartitionKeys = new string?[count];
        ContentTypes = new string[count];
        Headers = new string?[count];
        Bodies = new byte[count][];
    }

    public Guid[] Ids { get; }

    public string[] Types { get; }

    public int[] SchemaVersions { get; }

    public DateTime[] Times { get; }

    public string?[] CorrelationIds { get; }

    public string?[] CausationIds { get; }

    public string?[] UserIds { get; }

    public string?[] PartitionKeys { get; }

    public string[] ContentTypes { get; }

    public string?[] Headers { get; }

    public byte[][] Bodies { get; }

    /// <summary>Rows held.</summary>
    public int Count => Ids.Length;

    /// <summary>Sets row <paramref name="index"/> to the envelope's columns, with its correlation id as already read.</summary>
    public void Set(int index, Envelope envelope, string? correlationId) => Set(index, EnvelopeRow.Of(envelope, correlationId));

    /// <summary>Sets row <paramref name="index"/> to columns already read from an envelope.</summary>
    public void Set(int index, in EnvelopeRow row)
    {
        Ids[index] = row.Id;
        Types[index] = row.Type;
        SchemaVersions[index] = row.SchemaVersion;
        Times[index] = row.Time;
        CorrelationIds[index] = row.CorrelationId;
        CausationIds[index] = row.CausationId;
        UserIds[index] = row.UserId;
        PartitionKeys[index] = row.PartitionKey;
        ContentTypes[index] = row.ContentType;
        Headers[index] = row.Headers;
        Bodies[index] = row.Body;
    }

    /// <summary>Adds the <see cref="EnvelopeColumns.Count"/> array parameters, in the order of <see cref="EnvelopeColumns.Names"/>.</summary>
    public void AddTo(NpgsqlParameterCollection parameters)
    {
        parameters.Add(new NpgsqlParameter<Guid[]> { TypedValue = Ids, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Uuid });
        parameters.Add(new NpgsqlParameter<string[]> { TypedValue = Types, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<int[]> { TypedValue = SchemaVersions, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Integer });
        parameters.Add(new NpgsqlParameter<DateTime[]> { TypedValue = Times, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.TimestampTz });
        parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = CorrelationIds, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = CausationIds, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = UserIds, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = PartitionKeys, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<string[]> { TypedValue = ContentTypes, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = Headers, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Jsonb });
        parameters.Add(new NpgsqlParameter<byte[][]> { TypedValue = Bodies, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
    }
}

/// <summary>
/// The columns of <see cref="EnvelopeColumns.Names"/> for one envelope, read once (the headers formatted, the body as an
/// array): what a queued append holds per event until its group's writer puts it into an <see cref="EnvelopeArrays"/>.
/// </summary>
internal readonly record struct EnvelopeRow(
    Guid Id, string Type, int SchemaVersion, DateTime Time, string? CorrelationId, string? CausationId, string? UserId,
    string? PartitionKey, string ContentType, string? Headers, byte[] Body)
{
    /// <summary>The envelope's columns, with its correlation id as already read.</summary>
    public static EnvelopeRow Of(Envelope envelope, string? correlationId) => new(
        envelope.MessageId, envelope.MessageType, envelope.SchemaVersion, StoredTime.Of(envelope.Time).UtcDateTime, correlationId,
        envelope.CausationId, envelope.UserId, envelope.PartitionKey, envelope.ContentType,
        EnvelopeColumns.FormatHeaders(envelope.Headers), EnvelopeColumns.BodyArray(envelope.Body));

    /// <summary>
    /// Whether a text column holds U+0000, which PostgreSQL's text cannot (headers are stored as pieces, so they can). Read
    /// from the columns, not the envelope: an envelope's own-id correlation is made into text each time it is read.
    /// </summary>
    public bool HoldsNul =>
        NulText.Holds(Type) || NulText.Holds(CorrelationId) || NulText.Holds(CausationId)
        || NulText.Holds(UserId) || NulText.Holds(PartitionKey) || NulText.Holds(ContentType);

    /// <summary>UTF-16 units of its text columns.</summary>
    public long TextLength =>
        (long)Type.Length + ContentType.Length + (CorrelationId?.Length ?? 0) + (CausationId?.Length ?? 0)
        + (UserId?.Length ?? 0) + (PartitionKey?.Length ?? 0) + (Headers?.Length ?? 0);
}
