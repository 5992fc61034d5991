using Herald.Sqlite.EventSourcing;
using Herald.Internal;
using Microsoft.Extensions.Logging;

namespace Herald.Sqlite.Internal;

/// <summary>
/// The single writer of the store, on the core's <see cref="GroupCommitter{TItem}"/>: it takes up to
/// <see cref="SqliteStoreOptions.MaxWritesPerTransaction"/> queued writes, runs each in its own savepoint inside one
/// transaction (so a conflict undoes only that write and is reported only to its caller), commits once, and then completes
/// every caller. Writes that arrive during a commit form the next group, so one disk sync serves many concurrent appends.
/// </summary>
internal sealed class WriteCoordinator : IAsyncDisposable
{
    // How long the writer keeps the write lock for back-to-back groups before an open append gets its turn.
    private static readonly TimeSpan MaxLockHold = TimeSpan.FromMilliseconds(100);

    private readonly WriteSession _session;
    private readonly SemaphoreSlim _writeLock;
    private readonly Action<long> _committed;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly string _dataSource;
    private readonly GroupCommitter<PendingWrite> _committer;
    private long _transactions;
    private long _writes;
    private long _lockWaits;

    public WriteCoordinator(
        WriteSession session,
        SemaphoreSlim writeLock,
        SqliteStoreOptions options,
        string dataSource,
        TimeProvider timeProvider,
        ILogger logger,
        Action<long> committed)
    {
        _session = session;
        _writeLock = writeLock;
        _committed = committed;
        _timeProvider = timeProvider;
        _logger = logger;
        _dataSource = dataSource;
        var groups = new GroupCommitOptions
        {
            QueueCapacity = options.WriteQueueCapacity,
            MaxItems = options.MaxWritesPerTransaction,
            GroupDelay = options.GroupCommitDelay,
            TimeProvider = timeProvider,
            OwnerName = nameof(SqliteEventStore),
            DisposedMessage = "The SQLite store was disposed.",
        };
        _committer = new GroupCommitter<PendingWrite>(groups, () => new Writer(this));
    }

    /// <summary>Transactions committed or rolled back so far (a measure of grouping, for tests and benchmarks).</summary>
    public long Transactions => Interlocked.Read(ref _transactions);

    /// <summary>Writes run so far.</summary>
    public long Writes => Interlocked.Read(ref _writes);

    /// <summary>How often the writer took a group from the queue and asked for the write lock (for tests: a group waits).</summary>
    public long LockWaits => Interlocked.Read(ref _lockWaits);

    /// <summary>Queues a write and returns its outcome, known after its group's transaction ended.</summary>
    public async Task<T> WriteAsync<T>(Func<WriteSession, T> write, CancellationToken cancellationToken)
    {
        var pending = new PendingWrite<T>(write, cancellationToken);
        pending.CancelWhileWaiting();
        try
        {
            await _committer.EnqueueAsync(pending, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            pending.StopListening();
            throw;
        }

        return await pending.Task.ConfigureAwait(false);
    }

    /// <summary>Refuses new writes, runs those already queued, and closes the writer's connection.</summary>
    public ValueTask DisposeAsync() => _committer.DisposeAsync();

    private async ValueTask CommitAsync(GroupCommitBatch<PendingWrite> batch)
    {
        Interlocked.Increment(ref _lockWaits);
        await _writeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            // Once it has the lock, the writer works off what queued meanwhile (for a bounded time) before an open append
            // may take the lock: a held transaction then delays the queue by its own length, not by a group per held
            // transaction.
            var holding = _timeProvider.GetTimestamp();
            do
            {
                RunGroup(batch.Items);
            }
            while (_timeProvider.GetElapsedTime(holding) < MaxLockHold && batch.TryTakeNext());
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private void RunGroup(IReadOnlyList<PendingWrite> group)
    {
        if (!AnyWanted(group))
        {
            // Every caller of the group was let go while it waited for the write lock (an open append of this process held it).
            return;
        }

        Interlocked.Increment(ref _transactions);
        Interlocked.Add(ref _writes, group.Count);
        try
        {
            if (!_session.Begin(AnyWanted, group))
            {
                // Every caller of the group was let go while another connection held the file's write lock.
                return;
            }

            for (var i = 0; i < group.Count; i++)
            {
                var pending = group[i];
                if (!pending.TryStart())
                {
                    // Its caller was let go as cancelled while it waited: it never runs.
                    continue;
                }

                _session.Savepoint();
                try
                {
                    pending.Execute(_session);
                    _session.ReleaseSavepoint();
                }
                catch (Exception ex) when (_session.InTransaction)
                {
                    // SQLite itself ended the transaction (a full disk, an I/O error): the whole group is undone, and every
                    // caller learns this cause, not the missing savepoint.
                    if (!_session.TransactionOpen)
                    {
                        throw;
                    }

                    // Undo only this write; if that is impossible the whole group fails below.
                    _session.RollbackToSavepoint();
                    pending.Failure = ex;
                }
            }

            var appended = _session.LastAppendedPosition;
            _session.Commit();
            if (appended > 0)
            {
                _committed(appended);
            }
        }
        catch (Exception ex)
        {
            try
            {
                _session.Rollback();
            }
            catch (Exception rollbackFailure)
            {
                // The callers learn the first failure; SQLite ends a failed transaction by itself when it cannot go on.
                Log.RollbackFailed(_logger, rollbackFailure, _dataSource);
            }

            Log.WriteGroupFailed(_logger, ex, group.Count, _dataSource);
            for (var i = 0; i < group.Count; i++)
            {
                // A write whose caller was let go as cancelled never ran, and stays cancelled.
                group[i].Fail(ex);
            }

            return;
        }

        for (var i = 0; i < group.Count; i++)
        {
            group[i].Complete();
        }
    }

    // Whether any write of the group is still wanted; asked before BEGIN and while it waits for another connection's write
    // lock. Each cancelled caller was let go by its token already (PendingWrite.CancelWhileWaiting).
    private static bool AnyWanted(IReadOnlyList<PendingWrite> group)
    {
        for (var i = 0; i < group.Count; i++)
        {
            if (group[i].IsWanted)
            {
                return true;
            }
        }

        return false;
    }

    // The store has one writer loop; its end closes the session (after the last queued write ran).
    private sealed class Writer(WriteCoordinator owner) : IGroupCommitWriter<PendingWrite>
    {
        public ValueTask CommitAsync(GroupCommitBatch<PendingWrite> batch) => owner.CommitAsync(batch);

        public ValueTask DisposeAsync()
        {
            owner._session.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
