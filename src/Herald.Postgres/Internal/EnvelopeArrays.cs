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

    /// <summary>Sets row <paramref name="index"/> to the envelope's columns.</summary>
    public void Set(int index, Envelope envelope) => Set(index, envelope, envelope.CorrelationId);

    /// <summary>Sets row <paramref name="index"/> to the envelope's columns, with its correlation id as already read.</summary>
    public void Set(int index, Envelope envelope, string? correlationId)
    {
        Ids[index] = envelope.MessageId;
        Types[index] = envelope.MessageType;
        SchemaVersions[index] = envelope.SchemaVersion;
        Times[index] = StoredTime.Of(envelope.Time).UtcDateTime;
        CorrelationIds[index] = correlationId;
        CausationIds[index] = envelope.CausationId;
        UserIds[index] = envelope.UserId;
        PartitionKeys[index] = envelope.PartitionKey;
        ContentTypes[index] = envelope.ContentType;
        Headers[index] = EnvelopeColumns.FormatHeaders(envelope.Headers);
        Bodies[index] = EnvelopeColumns.BodyArray(envelope.Body);
    }

    /// <summary>
    /// Whether a text column of row <paramref name="index"/> holds U+0000, which PostgreSQL's text cannot (headers are
    /// stored as pieces, so they can). Read from the columns, not the envelope: an envelope's own-id correlation is made
    /// into text each time it is read.
    /// </summary>
    public bool HoldsNul(int index) =>
        NulText.Holds(Types[index]) || NulText.Holds(CorrelationIds[index]) || NulText.Holds(CausationIds[index])
        || NulText.Holds(UserIds[index]) || NulText.Holds(PartitionKeys[index]) || NulText.Holds(ContentTypes[index]);

    /// <summary>Copies every row into <paramref name="target"/> from row <paramref name="at"/> on.</summary>
    public void CopyTo(EnvelopeArrays target, int at)
    {
        var n = Count;
        Array.Copy(Ids, 0, target.Ids, at, n);
        Array.Copy(Types, 0, target.Types, at, n);
        Array.Copy(SchemaVersions, 0, target.SchemaVersions, at, n);
        Array.Copy(Times, 0, target.Times, at, n);
        Array.Copy(CorrelationIds, 0, target.CorrelationIds, at, n);
        Array.Copy(CausationIds, 0, target.CausationIds, at, n);
        Array.Copy(UserIds, 0, target.UserIds, at, n);
        Array.Copy(PartitionKeys, 0, target.PartitionKeys, at, n);
        Array.Copy(ContentTypes, 0, target.ContentTypes, at, n);
        Array.Copy(Headers, 0, target.Headers, at, n);
        Array.Copy(Bodies, 0, target.Bodies, at, n);
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
