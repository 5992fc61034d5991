using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace Herald.Sqlite.Internal;

/// <summary>
/// The single writer of the store. Callers queue writes on a bounded channel; the writer takes up to
/// <see cref="SqliteStoreOptions.MaxWritesPerTransaction"/> of them, runs each in its own savepoint inside one transaction
/// (so a conflict undoes only that write and is reported only to its caller), commits once, and then completes every caller.
/// Writes that arrive during a commit form the next group, so one disk sync serves many concurrent appends.
/// </summary>
internal sealed class WriteCoordinator : IAsyncDisposable
{
    // How long the writer keeps the write lock for back-to-back groups before an open append gets its turn.
    private static readonly TimeSpan MaxLockHold = TimeSpan.FromMilliseconds(100);

    private readonly Channel<PendingWrite> _queue;
    private readonly WriteSession _session;
    private readonly SemaphoreSlim _writeLock;
    private readonly Action<long> _committed;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly string _dataSource;
    private readonly int _maxGroup;
    private readonly TimeSpan _groupDelay;
    private readonly Task _loop;
    private long _transactions;
    private long _writes;

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
        _maxGroup = options.MaxWritesPerTransaction;
        _groupDelay = options.GroupCommitDelay;
        _queue = Channel.CreateBounded<PendingWrite>(new BoundedChannelOptions(options.WriteQueueCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = true,
        });
        _loop = Task.Run(RunAsync);
    }

    /// <summary>Transactions committed or rolled back so far (a measure of grouping, for tests and benchmarks).</summary>
    public long Transactions => Interlocked.Read(ref _transactions);

    /// <summary>Writes run so far.</summary>
    public long Writes => Interlocked.Read(ref _writes);

    /// <summary>Queues a write and returns its outcome, known after its group's transaction ended.</summary>
    public async Task<T> WriteAsync<T>(Func<WriteSession, T> write, CancellationToken cancellationToken)
    {
        var pending = new PendingWrite<T>(write, cancellationToken);
        try
        {
            if (!_queue.Writer.TryWrite(pending))
            {
                await _queue.Writer.WriteAsync(pending, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (ChannelClosedException)
        {
            throw new ObjectDisposedException(nameof(SqliteEventStore), "The SQLite store was disposed.");
        }

        return await pending.Task.ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        // Writes already queued still run; new ones are refused.
        _queue.Writer.TryComplete();
        await _loop.ConfigureAwait(false);
        _session.Dispose();
    }

    private async Task RunAsync()
    {
        var group = new List<PendingWrite>(_maxGroup);
        var reader = _queue.Reader;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            if (_groupDelay > TimeSpan.Zero && reader.Count < _maxGroup)
            {
                await Task.Delay(_groupDelay, _timeProvider).ConfigureAwait(false);
            }

            Fill(group, reader);
            if (group.Count == 0)
            {
                continue;
            }

            await _writeLock.WaitAsync().ConfigureAwait(false);
            try
            {
                // Once it has the lock, the writer works off what queued meanwhile (for a bounded time) before an open
                // append may take the lock: a held transaction then delays the queue by its own length, not by a group
                // per held transaction.
                var holding = _timeProvider.GetTimestamp();
                do
                {
                    RunGroup(group);
                    group.Clear();
                    if (_timeProvider.GetElapsedTime(holding) >= MaxLockHold)
                    {
                        break;
                    }

                    Fill(group, reader);
                }
                while (group.Count > 0);
            }
            finally
            {
                _writeLock.Release();
            }

            group.Clear();
        }
    }

    private void Fill(List<PendingWrite> group, ChannelReader<PendingWrite> reader)
    {
        while (group.Count < _maxGroup && reader.TryRead(out var pending))
        {
            if (pending.CancellationToken.IsCancellationRequested)
            {
                pending.Fail(new OperationCanceledException(pending.CancellationToken));
            }
            else
            {
                group.Add(pending);
            }
        }
    }

    private void RunGroup(List<PendingWrite> group)
    {
        Interlocked.Increment(ref _transactions);
        Interlocked.Add(ref _writes, group.Count);
        try
        {
            _session.Begin();
            foreach (var pending in group)
            {
                if (pending.CancellationToken.IsCancellationRequested)
                {
                    // Cancelled while waiting for the write lock: it never runs.
                    pending.Failure = new OperationCanceledException(pending.CancellationToken);
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
            foreach (var pending in group)
            {
                if (pending.Failure is OperationCanceledException)
                {
                    // It never ran; it stays cancelled.
                    pending.Complete();
                }
                else
                {
                    pending.Fail(ex);
                }
            }

            return;
        }

        foreach (var pending in group)
        {
            pending.Complete();
        }
    }
}
