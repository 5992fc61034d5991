using Herald.EventSourcing;
using Herald.Messages;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.EventSourcing;

/// <summary>
/// One caller's append, waiting for the coordinator. Its column arrays are built on the caller's thread when it is
/// queued, so the writer loop only assembles the batch.
/// </summary>
internal sealed class PendingAppend
{
    private readonly Guid[] _ids;
    private readonly string[] _types;
    private readonly int[] _schemaVersions;
    private readonly DateTime[] _times;
    private readonly string?[] _correlationIds;
    private readonly string?[] _causationIds;
    private readonly string?[] _userIds;
    private readonly string?[] _partitionKeys;
    private readonly string[] _contentTypes;
    private readonly string?[] _headers;
    private readonly byte[][] _bodies;

    public PendingAppend(string stream, ExpectedVersion expected, IReadOnlyList<Envelope> events, CancellationToken cancellationToken)
    {
        Stream = stream;
        Category = StreamName.GetCategory(stream);
        Expected = expected;
        CancellationToken = cancellationToken;
        var count = events.Count;
        _ids = new Guid[count];
        _types = new string[count];
        _schemaVersions = new int[count];
        _times = new DateTime[count];
        _correlationIds = new string?[count];
        _causationIds = new string?[count];
        _userIds = new string?[count];
        _partitionKeys = new string?[count];
        _contentTypes = new string[count];
        _headers = new string?[count];
        _bodies = new byte[count][];
        for (var i = 0; i < count; i++)
        {
            var envelope = events[i];
            _ids[i] = envelope.MessageId;
            _types[i] = envelope.MessageType;
            _schemaVersions[i] = envelope.SchemaVersion;
            _times[i] = envelope.Time.UtcDateTime;
            _correlationIds[i] = envelope.CorrelationId;
            _causationIds[i] = envelope.CausationId;
            _userIds[i] = envelope.UserId;
            _partitionKeys[i] = envelope.PartitionKey;
            _contentTypes[i] = envelope.ContentType;
            _headers[i] = EventRows.FormatHeaders(envelope.Headers);
            _bodies[i] = EventRows.BodyArray(envelope.Body);
        }
    }

    public string Stream { get; }

    public string Category { get; }

    public ExpectedVersion Expected { get; }

    public int Count => _ids.Length;

    public CancellationToken CancellationToken { get; }

    public TaskCompletionSource<AppendResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The call of the append function for this member, its events numbered from <paramref name="firstOrdinal"/>.</summary>
    public NpgsqlBatchCommand CreateCommand(EventStoreSql sql, int firstOrdinal, DateTime recordedAt)
    {
        var command = new NpgsqlBatchCommand(sql.Append);
        AddParameters(command.Parameters, sql, firstOrdinal, recordedAt);
        return command;
    }

    /// <summary>Adds the 17 positional parameters of <see cref="EventStoreSql.Append"/>.</summary>
    public void AddParameters(NpgsqlParameterCollection parameters, EventStoreSql sql, int firstOrdinal, DateTime recordedAt)
    {
        parameters.Add(new NpgsqlParameter<string> { TypedValue = Stream, NpgsqlDbType = NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<string> { TypedValue = Category, NpgsqlDbType = NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<long> { TypedValue = Expected.Value, NpgsqlDbType = NpgsqlDbType.Bigint });
        parameters.Add(new NpgsqlParameter<int> { TypedValue = firstOrdinal, NpgsqlDbType = NpgsqlDbType.Integer });
        parameters.Add(new NpgsqlParameter<long> { TypedValue = sql.PositionOffset, NpgsqlDbType = NpgsqlDbType.Bigint });
        parameters.Add(new NpgsqlParameter<DateTime> { TypedValue = recordedAt, NpgsqlDbType = NpgsqlDbType.TimestampTz });
        parameters.Add(new NpgsqlParameter<Guid[]> { TypedValue = _ids, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Uuid });
        parameters.Add(new NpgsqlParameter<string[]> { TypedValue = _types, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<int[]> { TypedValue = _schemaVersions, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Integer });
        parameters.Add(new NpgsqlParameter<DateTime[]> { TypedValue = _times, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.TimestampTz });
        parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = _correlationIds, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = _causationIds, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = _userIds, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = _partitionKeys, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<string[]> { TypedValue = _contentTypes, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<string?[]> { TypedValue = _headers, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Jsonb });
        parameters.Add(new NpgsqlParameter<byte[][]> { TypedValue = _bodies, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea });
    }
}
