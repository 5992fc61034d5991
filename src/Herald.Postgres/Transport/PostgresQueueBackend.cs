using Herald.Internal;
using Herald.Postgres.Internal;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.Transport;

/// <summary>
/// One consumer's hold on a queue of <c>queue_messages</c>: claims lease rows to this consumer's owner id with
/// <c>FOR UPDATE SKIP LOCKED</c>, and every settlement is one statement guarded by that owner. After a change that can make a
/// message claimable it wakes this process's consumers and asks for a NOTIFY for the others.
/// </summary>
internal sealed class PostgresQueueBackend(PostgresQueueTransport transport, string queue) : ILeasedQueueBackend<QueuedMessage>
{
    private readonly Guid _owner = Guid.CreateVersion7();

    /// <summary>How logs name this consumer.</summary>
    public string Name => $"PostgreSQL queue '{queue}' in schema '{transport.Options.Schema}' (owner {_owner})";

    public Task NextWakeUp() => transport.Wakeups.Next(queue);

    /// <summary>Leases up to <paramref name="max"/> claimable messages, and says when the next delayed one is due.</summary>
    public ValueTask<LeasedClaim<QueuedMessage>> ClaimAsync(int max, CancellationToken cancellationToken) =>
        transport.RestoringAsync((Backend: this, Max: max), static (s, ct) => s.Backend.ClaimOnceAsync(s.Max, ct), cancellationToken);

    private async ValueTask<LeasedClaim<QueuedMessage>> ClaimOnceAsync(int max, CancellationToken cancellationToken)
    {
        var now = transport.Now();
        var leaseUntil = PostgresQueueTransport.Add(now, transport.Options.LeaseDuration);
        await using var connection = await transport.DataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var batch = new NpgsqlBatch(connection);

        // One implicit transaction: the guard's planner settings hold for the claim, and end with it.
        batch.BatchCommands.Add(new NpgsqlBatchCommand(transport.Sql.ClaimPlanGuard));
        var claim = new NpgsqlBatchCommand(transport.Sql.Claim);
        claim.Parameters.Add(PostgresQueueTransport.Text(queue));
        claim.Parameters.Add(PostgresQueueTransport.Time(now));
        claim.Parameters.Add(new NpgsqlParameter<int> { TypedValue = max });
        claim.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = _owner });
        claim.Parameters.Add(PostgresQueueTransport.Time(leaseUntil));
        var next = new NpgsqlBatchCommand(transport.Sql.NextVisible);
        next.Parameters.Add(PostgresQueueTransport.Text(queue));
        next.Parameters.Add(PostgresQueueTransport.Time(now));
        batch.BatchCommands.Add(claim);
        batch.BatchCommands.Add(next);

        var rows = new List<(long Id, DateTimeOffset VisibleAt, QueuedMessage Message)>();
        DateTimeOffset? nextVisible = null;
        await using (var reader = await batch.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
        {
            await reader.NextResultAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                var id = reader.GetInt64(0);
                rows.Add((id, reader.GetFieldValue<DateTimeOffset>(1), Read(reader, id, reader.GetInt32(2) + 1, now)));
            }

            await reader.NextResultAsync(cancellationToken).ConfigureAwait(false);
            if (await reader.ReadAsync(cancellationToken).ConfigureAwait(false) && !reader.IsDBNull(0))
            {
                nextVisible = reader.GetFieldValue<DateTimeOffset>(0);
            }
        }

        // RETURNING does not keep the claim's order: hand them out oldest first.
        rows.Sort(static (a, b) => a.VisibleAt != b.VisibleAt ? a.VisibleAt.CompareTo(b.VisibleAt) : a.Id.CompareTo(b.Id));
        return new LeasedClaim<QueuedMessage>([.. rows.Select(r => r.Message)], leaseUntil, nextVisible);
    }

    public ValueTask<DateTimeOffset> RenewAsync(IReadOnlyCollection<QueuedMessage> held, ICollection<QueuedMessage> lost, CancellationToken cancellationToken)
    {
        // Synchronous, on the consumer's renewal thread: Npgsql's blocking calls need no thread-pool thread, so handlers
        // that starve the pool cannot delay the renewal (issue 10). On the renewals' own connections, not the queue's pool:
        // with every connection of that pool held (sends and settlements behind a slow server, more workers than its
        // Maximum Pool Size), the open waited the pool's Timeout, 15 s by default, and the lease ran out meanwhile.
        var leaseUntil = PostgresQueueTransport.Add(transport.Now(), transport.Options.LeaseDuration);
        var holds = new HashSet<(long, long)>();
        using (var connection = transport.Renewals.OpenConnection())
        using (var command = new NpgsqlCommand(transport.Sql.Renew, connection) { CommandTimeout = transport.Options.RenewalTimeoutSeconds })
        {
            command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = _owner });
            command.Parameters.Add(PostgresQueueTransport.Time(leaseUntil));
            command.Parameters.Add(new NpgsqlParameter<long[]> { TypedValue = held.Select(m => m.Id).ToArray() });
            using var reader = command.ExecuteReader();
            while (reader.Read())
            {
                holds.Add((reader.GetInt64(0), (long)reader.GetInt32(1)));
            }
        }

        foreach (var message in held)
        {
            if (!holds.Contains((message.Id, message.Attempts)))
            {
                lost.Add(message);
            }
        }

        return ValueTask.FromResult(leaseUntil);
    }

    // An ack makes the next message of its key claimable; the other settlements make the message itself claimable or change
    // what is due.
    public ValueTask<bool> AckAsync(QueuedMessage message, CancellationToken cancellationToken) =>
        RunAsync(transport.Sql.Ack, message, [], wake: message.Envelope.PartitionKey is not null, cancellationToken);

    public ValueTask<bool> NackAsync(QueuedMessage message, TimeSpan delay, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken) =>
        RunAsync(
            transport.Sql.Nack,
            message,
            [PostgresQueueTransport.Time(PostgresQueueTransport.Add(transport.Now(), delay)), Headers(headers)],
            wake: true,
            cancellationToken);

    public ValueTask<bool> DeadLetterAsync(QueuedMessage message, string reason, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken) =>
        RunAsync(transport.Sql.DeadLetter, message, [PostgresQueueTransport.Text(reason), PostgresQueueTransport.Time(transport.Now()), Headers(headers)], wake: true, cancellationToken);

    // Headers as the envelope's columns store them; NULL keeps the row's.
    private static NpgsqlParameter Headers(IReadOnlyDictionary<string, string>? headers) =>
        new() { NpgsqlDbType = NpgsqlDbType.Jsonb, Value = (headers is null ? null : EnvelopeColumns.FormatHeaders(headers)) ?? (object)DBNull.Value };

    public async ValueTask ReleaseAsync(QueuedMessage message, CancellationToken cancellationToken) =>
        await RunAsync(transport.Sql.Release, message, [], wake: true, cancellationToken).ConfigureAwait(false);

    public async ValueTask<QueueDepth?> CountAsync(CancellationToken cancellationToken)
    {
        await using var command = transport.DataSource.CreateCommand(transport.Sql.Count);
        command.Parameters.Add(PostgresQueueTransport.Text(queue));
        command.Parameters.Add(PostgresQueueTransport.Time(transport.Now()));
        await using var row = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await row.ReadAsync(cancellationToken).ConfigureAwait(false);
        return new QueueDepth(row.GetInt64(0), row.GetInt64(1), row.GetInt64(2));
    }

    public async ValueTask ReleaseAllAsync(CancellationToken cancellationToken) =>
        await RunAsync(transport.Sql.ReleaseAll, null, [], wake: true, cancellationToken).ConfigureAwait(false);

    /// <summary>
    /// Runs one statement guarded by this consumer's owner (parameters: the message's row id when given, the owner, then
    /// <paramref name="more"/>, then the claim's attempts when a message is given); true when it changed a row, after which
    /// the queue's consumers are woken if <paramref name="wake"/>.
    /// </summary>
    private async ValueTask<bool> RunAsync(string sql, QueuedMessage? message, NpgsqlParameter[] more, bool wake, CancellationToken cancellationToken)
    {
        await using var command = transport.DataSource.CreateCommand(sql);
        if (message is not null)
        {
            command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = message.Id });
        }

        command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = _owner });
        foreach (var parameter in more)
        {
            command.Parameters.Add(parameter);
        }

        if (message is not null)
        {
            command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = (int)message.Attempts });
        }

        var changed = await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) > 0;
        if (changed && wake)
        {
            transport.Changed(queue);
        }

        return changed;
    }

    /// <summary>
    /// The claimed row (columns as <see cref="QueueSql.Claim"/> returns them) as a message; never throws: a row whose
    /// envelope does not decode becomes one the pipeline dead-letters with the reason.
    /// </summary>
    internal static QueuedMessage Read(NpgsqlDataReader reader, long id, int deliveryAttempt, DateTimeOffset now)
    {
        const int First = 3;
        return QueuedRows.Read(
            reader,
            id,
            deliveryAttempt,
            (Attempt: deliveryAttempt, Now: now),
            static (r, attempt) => EnvelopeColumns.Read(r, First, attempt),
            static (r, state) => EnvelopeColumns.Salvaged(r, First, state.Attempt, state.Now));
    }
}
