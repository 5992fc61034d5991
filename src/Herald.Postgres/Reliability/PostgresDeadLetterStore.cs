using Herald.Messages;
using Herald.Persistence;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Internal;
using Herald.Reliability.DeadLetters;
using Npgsql;

namespace Herald.Postgres.Reliability;

/// <summary>
/// Dead letters in the <c>dead_letters</c> table of a <see cref="PostgresEventStore"/>'s schema. PostgreSQL orders
/// <c>uuid</c> as <see cref="Guid"/> compares, so id order and keyset paging match the in-memory store.
/// </summary>
internal sealed class PostgresDeadLetterStore : IDeadLetterStore
{
    private const string Columns =
        "id, endpoint, cause, error_type, error_message, stack_trace, fingerprint, first_failure, last_failure, attempt_count, retry_count, " +
        "last_retry_error, last_retry_time, " + EnvelopeColumns.StoredNames;

    // One statement for every combination of filters: a null parameter turns its filter off.
    private const string Where =
        " WHERE ($1::text IS NULL OR endpoint = $1) AND ($2::text IS NULL OR message_type = $2) AND ($3::text IS NULL OR fingerprint = $3)" +
        " AND ($4::timestamptz IS NULL OR last_failure >= $4) AND ($5::timestamptz IS NULL OR last_failure < $5) AND ($6::uuid IS NULL OR id > $6)";

    private readonly PostgresEventStore _store;
    private readonly TableSql _sql;

    /// <summary>Creates the store in the schema of <paramref name="store"/> (which creates and migrates it).</summary>
    public PostgresDeadLetterStore(PostgresEventStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        _store = store;
        _sql = new TableSql(store.Table("dead_letters"), store.Table("dead_letter_counts"));
    }

    /// <summary>A page of dead letters: the filters (<see cref="Filters"/>) then $7 the limit.</summary>
    internal string ListSql => _sql.List;

    /// <summary>The count of dead letters matching the filters, row by row (a query with more than an endpoint to match).</summary>
    internal string CountSql => _sql.Count;

    /// <summary>Deletes a page of dead letters matching the filters (<see cref="Filters"/>) then $7 the limit.</summary>
    internal string DeleteManySql => _sql.DeleteMany;

    /// <summary>The count of one endpoint's dead letters ($1), from the counts the triggers of migration 10 keep.</summary>
    internal string CountEndpointSql => _sql.CountEndpoint;

    /// <summary>The count of every dead letter, from the counts the triggers of migration 10 keep.</summary>
    internal string CountAllSql => _sql.CountAll;

    /// <inheritdoc />
    public async ValueTask<bool> AddAsync(DeadLetter deadLetter, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(deadLetter);
        ThrowIfUnstorable(deadLetter);
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var command = InsertCommand(deadLetter, connection, transaction: null);
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
    }

    /// <inheritdoc />
    public async ValueTask AddAsync(DeadLetter deadLetter, IUnitOfWork unitOfWork, Action<bool>? added = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(deadLetter);
        ThrowIfUnstorable(deadLetter);
        var own = _store.Own(unitOfWork);
        // The insert runs now, in the open transaction: ON CONFLICT DO NOTHING waits for a concurrent transaction holding the
        // same id, so its row count is what the commit makes durable (and a rollback, which skips the callback, discards it).
        var inserted = await own.ExecuteAsync(
            async (connection, transaction, token) =>
            {
                await using var command = InsertCommand(deadLetter, connection, transaction);
                return await command.ExecuteNonQueryAsync(token).ConfigureAwait(false);
            },
            cancellationToken).ConfigureAwait(false);
        if (added is not null)
        {
            own.OnCommitted(_ =>
            {
                added(inserted == 1);
                return ValueTask.CompletedTask;
            });
        }
    }

    // The endpoint is where a retry sends the message, so it is kept as given or refused, never made readable. No stored
    // dead letter has one holding U+0000, so a query for such an endpoint matches none.
    private static void ThrowIfUnstorable(DeadLetter deadLetter) => NulText.ThrowIfHeld(deadLetter.Endpoint, "dead letter's endpoint", nameof(deadLetter));

    private NpgsqlCommand InsertCommand(DeadLetter deadLetter, NpgsqlConnection connection, NpgsqlTransaction? transaction)
    {
        var command = new NpgsqlCommand(_sql.Insert, connection, transaction);
        var p = command.Parameters;
        p.Add(EnvelopeColumns.Id(deadLetter.Id));
        p.Add(EnvelopeColumns.Text(deadLetter.Endpoint));
        p.Add(EnvelopeColumns.Text(deadLetter.Cause.ToString()));
        p.Add(ErrorText(deadLetter.ErrorType));
        p.Add(ErrorText(deadLetter.ErrorMessage));
        p.Add(ErrorText(deadLetter.StackTrace));
        p.Add(ErrorText(deadLetter.Fingerprint));
        p.Add(EnvelopeColumns.Time(deadLetter.FirstFailureTime));
        p.Add(EnvelopeColumns.Time(deadLetter.LastFailureTime));
        p.Add(EnvelopeColumns.Int(deadLetter.AttemptCount));
        p.Add(EnvelopeColumns.Int(deadLetter.RetryCount));
        p.Add(ErrorText(deadLetter.LastRetryError));
        p.Add(EnvelopeColumns.Time(deadLetter.LastRetryTime));
        EnvelopeColumns.AddStored(p, Storable(deadLetter.Envelope));
        return command;
    }

    /// <inheritdoc />
    public async ValueTask<DeadLetter?> GetAsync(Guid id, CancellationToken cancellationToken = default)
    {
        return await _store.QueryFirstAloneAsync(_sql.Get, [EnvelopeColumns.Id(id)], Read, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<IReadOnlyList<DeadLetter>> ListAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (NulText.Holds(query.Endpoint))
        {
            return [];
        }

        return await _store.QueryAloneAsync(_sql.List, [.. Filters(query), EnvelopeColumns.Int(query.Limit)], Read, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<long> CountAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (NulText.Holds(query.Endpoint))
        {
            return 0;
        }

        // The monitor, the retention and the health check count a whole endpoint or everything: a few rows of the counts
        // table, whatever the size of the table (issue 16). Any other filter counts the matching rows.
        if (query is { MessageType: null, Fingerprint: null, FailedFrom: null, FailedBefore: null, After: null })
        {
            return query.Endpoint is { } endpoint
                ? await _store.ScalarAloneAsync<long>(_sql.CountEndpoint, [EnvelopeColumns.Text(endpoint)], cancellationToken).ConfigureAwait(false)
                : await _store.ScalarAloneAsync<long>(_sql.CountAll, [], cancellationToken).ConfigureAwait(false);
        }

        return await _store.ScalarAloneAsync<long>(_sql.Count, Filters(query), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<bool> DeleteAsync(Guid id, CancellationToken cancellationToken = default)
    {
        return await _store.ExecuteAloneAsync(_sql.Delete, [EnvelopeColumns.Id(id)], cancellationToken).ConfigureAwait(false) == 1;
    }

    /// <inheritdoc />
    public async ValueTask DeleteAsync(Guid id, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        var own = _store.Own(unitOfWork);
        // The delete runs now, in the open transaction, and locks the row: a concurrent delete of it waits for this unit of
        // work to end, then deletes nothing if it committed. Nothing deleted here dooms the commit.
        var deleted = await own.ExecuteAsync(
            async (connection, transaction, token) =>
            {
                await using var command = new NpgsqlCommand(_sql.Delete, connection, transaction);
                command.Parameters.Add(EnvelopeColumns.Id(id));
                return await command.ExecuteNonQueryAsync(token).ConfigureAwait(false);
            },
            cancellationToken).ConfigureAwait(false);
        if (deleted == 0)
        {
            own.Doom(new DeadLetterNotFoundException(id));
        }
    }

    /// <inheritdoc />
    public async ValueTask<int> DeleteManyAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (NulText.Holds(query.Endpoint))
        {
            return 0;
        }

        return await _store.ExecuteGuardedAloneAsync(_sql.DeleteMany, [.. Filters(query), EnvelopeColumns.Int(query.Limit)], cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<bool> RecordRetryFailureAsync(Guid id, string error, DateTimeOffset time, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(error);
        NpgsqlParameter[] parameters = [EnvelopeColumns.Id(id), ErrorText(error), EnvelopeColumns.Time(time)];
        return await _store.ExecuteAloneAsync(_sql.RecordRetry, parameters, cancellationToken).ConfigureAwait(false) == 1;
    }

    internal static NpgsqlParameter[] Filters(DeadLetterQuery query) =>
    [
        EnvelopeColumns.Text(query.Endpoint),
        ErrorText(query.MessageType),
        ErrorText(query.Fingerprint),
        EnvelopeColumns.TimeBound(query.FailedFrom),
        EnvelopeColumns.TimeBound(query.FailedBefore),
        EnvelopeColumns.Id(query.After),
    ];

    // PostgreSQL's text holds no NUL character, and an exception's message that echoes its input can have one: refusing the
    // record would leave the message in the transport's own dead letters, their drain failing on it for ever.
    private static NpgsqlParameter ErrorText(string? text) => EnvelopeColumns.Text(NulText.Readable(text));

    // The same for the envelope's text attributes, which a broker passes on as any client sent them (headers keep NUL).
    private static Envelope Storable(Envelope envelope) => envelope with
    {
        MessageType = NulText.Readable(envelope.MessageType),
        CorrelationId = NulText.Readable(envelope.CorrelationId),
        CausationId = NulText.Readable(envelope.CausationId),
        UserId = NulText.Readable(envelope.UserId),
        PartitionKey = NulText.Readable(envelope.PartitionKey),
        ContentType = NulText.Readable(envelope.ContentType),
    };

    private static DeadLetter Read(NpgsqlDataReader reader) => new()
    {
        Id = reader.GetGuid(0),
        Endpoint = reader.GetString(1),
        Cause = Enum.Parse<DeadLetterCause>(reader.GetString(2)),
        ErrorType = reader.GetString(3),
        ErrorMessage = reader.GetString(4),
        StackTrace = EnvelopeColumns.NullableText(reader, 5),
        Fingerprint = reader.GetString(6),
        FirstFailureTime = reader.GetFieldValue<DateTimeOffset>(7),
        LastFailureTime = reader.GetFieldValue<DateTimeOffset>(8),
        AttemptCount = reader.GetInt32(9),
        RetryCount = reader.GetInt32(10),
        LastRetryError = EnvelopeColumns.NullableText(reader, 11),
        LastRetryTime = EnvelopeColumns.NullableTime(reader, 12),
        Envelope = EnvelopeColumns.ReadStored(reader, 13),
    };

    /// <summary>The statements on the <c>dead_letters</c> table of the store's schema and its counts per endpoint (<c>dead_letter_counts</c>).</summary>
    private sealed class TableSql(string table, string counts)
    {
        private static readonly string Values = EnvelopeColumns.Placeholders(13 + EnvelopeColumns.StoredCount);

        public string Insert { get; } = $"INSERT INTO {table} ({Columns}) VALUES ({Values}) ON CONFLICT (id) DO NOTHING";

        public string Get { get; } = $"SELECT {Columns} FROM {table} WHERE id = $1";

        public string List { get; } = $"SELECT {Columns} FROM {table}{Where} ORDER BY id LIMIT $7";

        public string Count { get; } = $"SELECT count(*) FROM {table}{Where}";

        public string CountEndpoint { get; } = $"SELECT coalesce(sum(count), 0)::bigint FROM {counts} WHERE endpoint = $1";

        public string CountAll { get; } = $"SELECT coalesce(sum(count), 0)::bigint FROM {counts}";

        public string Delete { get; } = $"DELETE FROM {table} WHERE id = $1";

        // The filters are checked again outside the subquery: a dead letter changed (moved to another endpoint) while the
        // delete waited on its row lock may match no more once that commits, and only the outer WHERE is checked against the
        // row's new version (READ COMMITTED).
        public string DeleteMany { get; } = $"DELETE FROM {table}{Where} AND id IN (SELECT id FROM {table}{Where} ORDER BY id LIMIT $7)";

        public string RecordRetry { get; } = $"UPDATE {table} SET retry_count = retry_count + 1, last_retry_error = $2, last_retry_time = $3 WHERE id = $1";
    }
}
