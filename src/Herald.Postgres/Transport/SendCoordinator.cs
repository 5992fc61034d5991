using Herald.Internal;
using Herald.Postgres.Internal;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Postgres.Transport;

/// <summary>
/// Groups concurrent sends into shared commits on the core's <see cref="GroupCommitter{TItem}"/>, as the event store's
/// append coordinator does for appends. Each group (up to a count and a byte budget) is inserted with one multi-row statement: one round trip, one transaction, one WAL flush for the group. A
/// caller's send returns once its group has committed, so a send is as durable as before. The statement carries no NOTIFY:
/// after the commit, a callback wakes this process's consumers and asks the <see cref="Notifications.CommitNotifier"/> to
/// wake the others. If a group fails as a whole (one bad value), its members are sent one by one, so each caller gets its
/// own outcome.
/// </summary>
internal sealed class SendCoordinator : IAsyncDisposable
{
    /// <summary>Sends one commit may hold.</summary>
    public const int MaxSendsPerCommit = 256;

    /// <summary>Body bytes one commit may hold before the next starts (a larger message still goes, alone).</summary>
    public const long MaxBytesPerCommit = 4 * 1024 * 1024;

    private static readonly GroupCommitOptions Groups = new()
    {
        QueueCapacity = 4096,
        Writers = 2,
        MaxItems = MaxSendsPerCommit,
        MaxWeight = MaxBytesPerCommit,
        OwnerName = nameof(PostgresQueueTransport),
        DisposedMessage = "The queue transport was disposed; the message was not sent.",
    };

    private readonly NpgsqlDataSource _dataSource;
    private readonly QueueSql _sql;
    private readonly ILogger _logger;
    private readonly Action<IReadOnlyCollection<string>> _committed;
    private readonly GroupCommitter<PendingSend> _committer;

    public SendCoordinator(NpgsqlDataSource dataSource, QueueSql sql, ILogger logger, Action<IReadOnlyCollection<string>> committed)
    {
        _dataSource = dataSource;
        _sql = sql;
        _logger = logger;
        _committed = committed;

        // The writers keep no state of their own (each insert takes a pooled connection): one serves both slots.
        var writer = new Writer(this);
        _committer = new GroupCommitter<PendingSend>(Groups, () => writer);
    }

    /// <summary>
    /// Queues the send and completes once its row has committed. A cancellation after the send was taken into a group may
    /// still let it commit, as with any database call.
    /// </summary>
    public async Task SendAsync(PendingSend pending, CancellationToken cancellationToken)
    {
        await _committer.EnqueueAsync(pending, cancellationToken).ConfigureAwait(false);
        await pending.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Stops taking sends, commits those already queued and waits for the committer's loop and writers to end.</summary>
    public ValueTask DisposeAsync() => _committer.DisposeAsync();

    private async Task RunGroupAsync(IReadOnlyList<PendingSend> group)
    {
        try
        {
            await InsertAsync(group).ConfigureAwait(false);
            Complete(group);
        }
        catch (Exception ex) when (group.Count > 1 && ex is PostgresException or ArgumentException)
        {
            // The group rolled back as a whole, or was never sent: one member's value was refused by the server, or by the
            // client before anything went out (text it cannot encode, half of a surrogate pair). Give every member its own
            // transaction, so each caller gets its own outcome.
            Log.GroupFailed(_logger, ex, group.Count, "queue sends", (ex as PostgresException)?.SqlState ?? ex.GetType().Name);
            for (var i = 0; i < group.Count; i++)
            {
                var pending = group[i];
                try
                {
                    await InsertAsync([pending]).ConfigureAwait(false);
                    Complete([pending]);
                }
                catch (Exception one)
                {
                    pending.TrySetException(one);
                }
            }
        }
        catch (Exception ex)
        {
            for (var i = 0; i < group.Count; i++)
            {
                group[i].TrySetException(ex);
            }
        }
    }

    private async Task InsertAsync(IReadOnlyList<PendingSend> group)
    {
        var count = group.Count;
        var queues = new string[count];
        var columns = new EnvelopeArrays(count);
        var enqueuedAt = new DateTimeOffset[count];
        var visibleAt = new DateTimeOffset[count];
        for (var i = 0; i < count; i++)
        {
            var pending = group[i];
            queues[i] = pending.Queue;
            columns.Set(i, pending.Envelope, pending.CorrelationId);
            enqueuedAt[i] = pending.EnqueuedAt;
            visibleAt[i] = pending.VisibleAt;
        }

        // One statement in an implicit transaction: the group commits when it returns.
        await using var command = _dataSource.CreateCommand(_sql.InsertMany);
        var parameters = command.Parameters;
        parameters.Add(new NpgsqlParameter<string[]> { TypedValue = queues });
        columns.AddTo(parameters);
        parameters.Add(new NpgsqlParameter<DateTimeOffset[]> { TypedValue = enqueuedAt });
        parameters.Add(new NpgsqlParameter<DateTimeOffset[]> { TypedValue = visibleAt });
        await command.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
    }

    private void Complete(IReadOnlyList<PendingSend> group)
    {
        // Wake-ups first, so a caller that disposes the transport as soon as its send returns still gets the NOTIFY sent
        // (disposing flushes the notifier).
        if (group.Count == 1)
        {
            _committed([group[0].Queue]);
        }
        else
        {
            var queues = new HashSet<string>(StringComparer.Ordinal);
            foreach (var pending in group)
            {
                queues.Add(pending.Queue);
            }

            _committed(queues);
        }

        foreach (var pending in group)
        {
            pending.TrySetResult();
        }
    }

    private sealed class Writer(SendCoordinator owner) : IGroupCommitWriter<PendingSend>
    {
        public ValueTask CommitAsync(GroupCommitBatch<PendingSend> batch) => new(owner.RunGroupAsync(batch.Items));

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
