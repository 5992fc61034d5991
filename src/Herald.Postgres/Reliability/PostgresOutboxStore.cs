using Herald.Postgres.Persistence;
using Herald.Persistence;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Internal;
using Herald.Reliability;
using Herald.Reliability.Outbox;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.Reliability;

/// <summary>
/// Outgoing messages in the <c>outbox</c> table of a <see cref="PostgresEventStore"/>'s schema. Rows added in a
/// <see cref="PostgresUnitOfWork"/> are written in its transaction; pending rows come back in the order they were added
/// (an identity sequence).
/// </summary>
/// <remarks>
/// Several nodes may run a relay on one schema: the relays elect one leader through the schema's
/// <see cref="Herald.Persistence.ILeaderElection"/> (a session advisory lock, registered by <c>UsePostgres</c>), so one
/// relay sends at a time and per-key order holds, as the port's contract asks.
/// </remarks>
/// <param name="store">The event store in whose schema the table lives (it creates and migrates it).</param>
internal sealed class PostgresOutboxStore(PostgresEventStore store) : IOutboxStore
{
    private const string Columns =
        "id, destination_kind, destination, created_at, outbox_partition_key, deliver_at, sent_at, attempts, next_attempt_at, " + EnvelopeColumns.StoredNames;

    private readonly PostgresEventStore _store = store ?? throw new ArgumentNullException(nameof(store));
    private readonly TableSql _sql = new(store.Table("outbox"));

    /// <summary>The relay's fetch: pending rows in order ($1 limit), or only the rows due ($2 the time) when <paramref name="due"/>.</summary>
    internal string FetchSql(bool due) => due ? _sql.FetchDue : _sql.Fetch;

    /// <summary>The count of pending rows.</summary>
    internal string CountSql => _sql.Count;

    /// <inheritdoc />
    public async ValueTask AddAsync(IReadOnlyList<OutboxMessage> messages, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var rows = messages.ToArray();
        foreach (var row in rows)
        {
            ArgumentNullException.ThrowIfNull(row, nameof(messages));
            ThrowIfUnstorable(row);
        }

        if (rows.Length == 0)
        {
            return;
        }

        if (unitOfWork is null)
        {
            await InsertAloneAsync(rows, cancellationToken).ConfigureAwait(false);
        }
        else if (_store.OwnUnitOfWork(unitOfWork) is { } own)
        {
            await own.ExecuteAsync((connection, transaction, token) => InsertAsync(connection, transaction, rows, token), cancellationToken).ConfigureAwait(false);
        }
        else
        {
            // A unit of work without a transaction here: the rows follow its commit.
            unitOfWork.OnCommitted(token => new ValueTask(InsertAloneAsync(rows, token)));
        }
    }

    /// <inheritdoc />
    public async ValueTask<IReadOnlyList<OutboxMessage>> FetchPendingAsync(int maxCount, DateTimeOffset? dueBy = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        NpgsqlParameter[] parameters = dueBy is { } by ? [EnvelopeColumns.Int(maxCount), EnvelopeColumns.Time(by)] : [EnvelopeColumns.Int(maxCount)];
        return await _store.QueryAloneAsync(dueBy is null ? _sql.Fetch : _sql.FetchDue, parameters, Read, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask MarkSentAsync(IReadOnlyCollection<Guid> ids, DateTimeOffset sentAt, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(ids);
        if (ids.Count == 0)
        {
            return;
        }

        // Once sent, a row left unmarked is sent again: a connection found cut (the relay's pool idle while it sent) is no
        // reason for that, and marking twice changes nothing.
        Guid[] marked = [.. ids];
        NpgsqlParameter[] Parameters() =>
        [
            new NpgsqlParameter<Guid[]> { TypedValue = marked, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Uuid },
            EnvelopeColumns.Time(sentAt),
        ];
        await _store.ExecuteIdempotentAloneAsync(_sql.MarkSent, Parameters, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask RecordFailedAttemptAsync(Guid id, DateTimeOffset nextAttemptAt, CancellationToken cancellationToken = default)
    {
        await _store.ExecuteAloneAsync(_sql.RecordFailure, [EnvelopeColumns.Id(id), EnvelopeColumns.Time(nextAttemptAt)], cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<int> DeleteSentAsync(DateTimeOffset sentBefore, int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        return await _store.ExecuteGuardedAloneAsync(_sql.DeleteSent, [EnvelopeColumns.Time(sentBefore), EnvelopeColumns.Int(maxCount)], cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<long> CountPendingAsync(CancellationToken cancellationToken = default)
    {
        return await _store.ScalarAloneAsync<long>(_sql.Count, [], cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<OutboxMessage?> GetAsync(Guid id, CancellationToken cancellationToken = default)
    {
        return await _store.QueryFirstAloneAsync(_sql.Get, [EnvelopeColumns.Id(id)], Read, cancellationToken).ConfigureAwait(false);
    }

    // Checked before anything is written: the message is sent exactly as stored, so it is kept exactly or refused, never
    // altered, and a bare 22021 from the batch would name neither the row nor the field.
    private static void ThrowIfUnstorable(OutboxMessage message)
    {
        NulText.ThrowIfHeld(message.Destination, "destination", "messages", message, Of);
        NulText.ThrowIfHeld(message.PartitionKey, "partition key", "messages", message, Of);
        NulText.ThrowIfHeld(message.Envelope, "messages", message, Of);

        static string Of(OutboxMessage message) => $"outbox message {message.Id}";
    }

    private async Task InsertAloneAsync(OutboxMessage[] rows, CancellationToken cancellationToken)
    {
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await InsertAsync(connection, transaction, rows, cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task<bool> InsertAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, OutboxMessage[] rows, CancellationToken cancellationToken)
    {
        // One round trip; the statements run in order, so the sequence keeps the list's order.
        await using var batch = new NpgsqlBatch(connection, transaction);
        foreach (var message in rows)
        {
            var command = new NpgsqlBatchCommand(_sql.Insert);
            var p = command.Parameters;
            p.Add(EnvelopeColumns.Id(message.Id));
            p.Add(EnvelopeColumns.Text(message.DestinationKind.ToString()));
            p.Add(EnvelopeColumns.Text(message.Destination));
            p.Add(EnvelopeColumns.Time(message.CreatedAt));
            p.Add(EnvelopeColumns.Text(message.PartitionKey));
            p.Add(EnvelopeColumns.Time(message.DeliverAt));
            p.Add(EnvelopeColumns.Time(message.SentAt));
            p.Add(EnvelopeColumns.Int(message.Attempts));
            p.Add(EnvelopeColumns.Time(message.NextAttemptAt));
            EnvelopeColumns.AddStored(p, message.Envelope);
            batch.BatchCommands.Add(command);
        }

        await batch.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        return true;
    }

    private static OutboxMessage Read(NpgsqlDataReader reader) => new()
    {
        Id = reader.GetGuid(0),
        DestinationKind = Enum.Parse<OutboxDestinationKind>(reader.GetString(1)),
        Destination = reader.GetString(2),
        CreatedAt = reader.GetFieldValue<DateTimeOffset>(3),
        PartitionKey = EnvelopeColumns.NullableText(reader, 4),
        DeliverAt = EnvelopeColumns.NullableTime(reader, 5),
        SentAt = EnvelopeColumns.NullableTime(reader, 6),
        Attempts = reader.GetInt32(7),
        NextAttemptAt = EnvelopeColumns.NullableTime(reader, 8),
        Envelope = EnvelopeColumns.ReadStored(reader, 9),
    };

    /// <summary>The statements on the <c>outbox</c> table of the store's schema.</summary>
    private sealed class TableSql(string table)
    {
        private static readonly string Values = EnvelopeColumns.Placeholders(9 + EnvelopeColumns.StoredCount);

        public string Insert { get; } = $"INSERT INTO {table} ({Columns}) VALUES ({Values})";

        public string Fetch { get; } = $"SELECT {Columns} FROM {table} WHERE sent_at IS NULL ORDER BY seq LIMIT $1";

        // A row waiting on its back-off is skipped, and so is every later row of its key (the key keeps its order).
        public string FetchDue { get; } = $"SELECT {Columns} FROM {table} o WHERE sent_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= $2) " +
            $"AND (outbox_partition_key IS NULL OR NOT EXISTS (SELECT 1 FROM {table} w WHERE w.sent_at IS NULL AND w.next_attempt_at > $2 " +
            "AND w.outbox_partition_key = o.outbox_partition_key AND w.seq < o.seq)) ORDER BY seq LIMIT $1";

        public string RecordFailure { get; } = $"UPDATE {table} SET attempts = attempts + 1, next_attempt_at = $2 WHERE id = $1 AND sent_at IS NULL";

        public string Get { get; } = $"SELECT {Columns} FROM {table} WHERE id = $1";

        public string Count { get; } = $"SELECT count(*) FROM {table} WHERE sent_at IS NULL";

        public string MarkSent { get; } = $"UPDATE {table} SET sent_at = $2 WHERE id = ANY ($1) AND sent_at IS NULL";

        // The outer test again: in READ COMMITTED only it is checked against the new version of a row the delete waited on,
        // so a row an operator marked unsent meanwhile (to send it again) stays.
        public string DeleteSent { get; } = $"DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table} WHERE sent_at < $1 ORDER BY sent_at LIMIT $2) AND sent_at < $1";
    }
}
