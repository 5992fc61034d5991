using Herald.Internal;
using Herald.Messages;
using Npgsql;

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
    public async ValueTask<LeasedClaim<QueuedMessage>> ClaimAsync(int max, CancellationToken cancellationToken)
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

    public async ValueTask<DateTimeOffset> RenewAsync(CancellationToken cancellationToken)
    {
        var leaseUntil = PostgresQueueTransport.Add(transport.Now(), transport.Options.LeaseDuration);
        await using var command = transport.DataSource.CreateCommand(transport.Sql.Renew);
        command.Parameters.Add(Owner());
        command.Parameters.Add(PostgresQueueTransport.Time(leaseUntil));
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        return leaseUntil;
    }

    public async ValueTask<bool> AckAsync(QueuedMessage message, CancellationToken cancellationToken)
    {
        await using var command = transport.DataSource.CreateCommand(transport.Sql.Ack);
        command.Parameters.Add(Id(message));
        command.Parameters.Add(Owner());
        var acked = await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) > 0;

        // The next message of the key becomes claimable.
        if (acked && message.Envelope.PartitionKey is not null)
        {
            transport.Changed(queue);
        }

        return acked;
    }

    public async ValueTask<bool> NackAsync(QueuedMessage message, TimeSpan delay, CancellationToken cancellationToken)
    {
        await using var command = transport.DataSource.CreateCommand(transport.Sql.Nack);
        command.Parameters.Add(Id(message));
        command.Parameters.Add(Owner());
        command.Parameters.Add(PostgresQueueTransport.Time(PostgresQueueTransport.Add(transport.Now(), delay)));
        var nacked = await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) > 0;
        if (nacked)
        {
            transport.Changed(queue);
        }

        return nacked;
    }

    public async ValueTask<bool> DeadLetterAsync(QueuedMessage message, string reason, CancellationToken cancellationToken)
    {
        await using var command = transport.DataSource.CreateCommand(transport.Sql.DeadLetter);
        command.Parameters.Add(Id(message));
        command.Parameters.Add(Owner());
        command.Parameters.Add(PostgresQueueTransport.Text(reason));
        command.Parameters.Add(PostgresQueueTransport.Time(transport.Now()));
        var moved = await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) > 0;
        if (moved)
        {
            transport.Changed(queue);
        }

        return moved;
    }

    public async ValueTask ReleaseAsync(QueuedMessage message, CancellationToken cancellationToken)
    {
        await using var command = transport.DataSource.CreateCommand(transport.Sql.Release);
        command.Parameters.Add(Id(message));
        command.Parameters.Add(Owner());
        if (await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) > 0)
        {
            transport.Changed(queue);
        }
    }

    public async ValueTask ReleaseAllAsync(CancellationToken cancellationToken)
    {
        await using var command = transport.DataSource.CreateCommand(transport.Sql.ReleaseAll);
        command.Parameters.Add(Owner());
        if (await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) > 0)
        {
            transport.Changed(queue);
        }
    }

    /// <summary>The claimed row as a message; a row whose envelope does not decode becomes one the pipeline dead-letters.</summary>
    private static QueuedMessage Read(NpgsqlDataReader reader, long id, int deliveryAttempt, DateTimeOffset now)
    {
        const int First = 3;
        try
        {
            return new QueuedMessage(id, PostgresQueueTransport.ReadEnvelope(reader, First, deliveryAttempt));
        }
#pragma warning disable CA1031 // Whatever the row holds, the claim goes on; the failure travels with the message to the dead letters.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            var envelope = new Envelope
            {
                MessageId = Salvage.Read(() => reader.GetGuid(First), Guid.Empty),
                MessageType = Salvage.Read(() => reader.GetString(First + 1), ""),
                Time = Salvage.Read(() => reader.GetFieldValue<DateTimeOffset>(First + 3), now),
                PartitionKey = Salvage.Read(() => reader.IsDBNull(First + 7) ? null : reader.GetString(First + 7), null),
                Body = Salvage.Read(() => reader.GetFieldValue<byte[]>(First + 10), []),
                DeliveryAttempt = deliveryAttempt,
            };
            return new QueuedMessage(id, envelope, ex);
        }
    }

    private static NpgsqlParameter<long> Id(QueuedMessage message) => new() { TypedValue = message.Id };

    private NpgsqlParameter<Guid> Owner() => new() { TypedValue = _owner };
}
