using Herald.Sqlite.Internal;
using Herald.EventSourcing;
using Herald.Internal;

namespace Herald.Sqlite.EventSourcing;

/// <summary>An append inside a transaction that is still open; it holds the store's write lock until committed or rolled back.</summary>
internal sealed class SqliteOpenAppend(WriteSession session, AppendResult result, SemaphoreSlim writeLock, SemaphoreSlim gate, PositionSignal signal)
    : IAsyncDisposable
{
    private int _ended;

    /// <summary>What the append will have done once committed.</summary>
    public AppendResult Result { get; } = result;

    /// <summary>Commits: the events become readable and waiters wake.</summary>
    public Task CommitAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        End(commit: true);
        return Task.CompletedTask;
    }

    /// <summary>Rolls back: nothing of the append is ever readable.</summary>
    public Task RollbackAsync(CancellationToken cancellationToken = default)
    {
        End(commit: false);
        return Task.CompletedTask;
    }

    /// <summary>Rolls back unless already committed or rolled back.</summary>
    public ValueTask DisposeAsync()
    {
        if (Volatile.Read(ref _ended) == 0)
        {
            End(commit: false);
        }

        return ValueTask.CompletedTask;
    }

    private void End(bool commit)
    {
        if (Interlocked.Exchange(ref _ended, 1) == 1)
        {
            throw new InvalidOperationException("The open append was already committed or rolled back.");
        }

        var appended = session.LastAppendedPosition;
        try
        {
            if (commit)
            {
                session.Commit();
            }
            else
            {
                session.Rollback();
            }
        }
        catch when (commit)
        {
            try
            {
                session.Rollback();
            }
            catch (Microsoft.Data.Sqlite.SqliteException)
            {
                // The commit's failure is what the caller needs to see; closing the connection below ends the transaction anyway.
            }

            throw;
        }
        finally
        {
            session.Dispose();

            // The write lock first: a writer already waiting for it goes before the next open append.
            writeLock.Release();
            gate.Release();
        }

        if (commit && appended > 0)
        {
            signal.Publish(appended);
        }
    }
}
