using Herald.Sqlite.EventSourcing;
using Herald.Persistence;
using Herald.Reliability;
using Herald.Sqlite.Internal;

namespace Herald.Sqlite.Persistence;

/// <summary>
/// The unit of work on a <see cref="SqliteEventStore"/>'s file. Enlisted writes (outbox rows, the inbox mark, appends made
/// with <see cref="SqliteEventStore.AppendAsync(string, Herald.EventSourcing.ExpectedVersion, IReadOnlyList{Herald.Messages.Envelope}, IUnitOfWork, CancellationToken)"/>)
/// are kept in memory and run at <see cref="CommitAsync"/> as one write of the store's single writer: all of them commit in
/// one transaction or none does. A rollback, or a scope that ends first, discards them.
/// </summary>
/// <remarks>
/// Nothing touches the file before the commit, so a unit of work never holds SQLite's write lock while handlers run and
/// cannot deadlock with the store's other writes. A conflict found at the commit (a stale expected version, an inbox mark
/// another process made meanwhile) fails <see cref="CommitAsync"/>, which then runs the rollback callbacks.
/// </remarks>
internal sealed class SqliteUnitOfWork : IUnitOfWork, IAsyncDisposable
{
    private readonly Lock _gate = new();
    private List<Action<WriteSession>>? _writes;
    private List<Func<CancellationToken, ValueTask>>? _committed;
    private List<Func<CancellationToken, ValueTask>>? _rolledBack;
    private List<Action>? _ended;
    private bool _completed;

    /// <summary>Creates a unit of work whose writes commit through <paramref name="store"/>'s writer.</summary>
    public SqliteUnitOfWork(SqliteEventStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        Store = store;
    }

    /// <inheritdoc />
    public bool IsCompleted
    {
        get
        {
            lock (_gate)
            {
                return _completed;
            }
        }
    }

    /// <summary>The store whose file this unit of work writes to.</summary>
    internal SqliteEventStore Store { get; }

    /// <summary>Number of writes waiting for the commit.</summary>
    internal int PendingWrites
    {
        get
        {
            lock (_gate)
            {
                return _writes?.Count ?? 0;
            }
        }
    }

    /// <inheritdoc />
    public void OnCommitted(Func<CancellationToken, ValueTask> callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        lock (_gate)
        {
            ThrowIfCompleted();
            (_committed ??= []).Add(callback);
        }
    }

    /// <inheritdoc />
    public void OnRolledBack(Func<CancellationToken, ValueTask> callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        lock (_gate)
        {
            ThrowIfCompleted();
            (_rolledBack ??= []).Add(callback);
        }
    }

    /// <inheritdoc />
    public async ValueTask CommitAsync(CancellationToken cancellationToken = default)
    {
        if (!TryComplete(out var writes, out var committed, out var rolledBack, out var ended))
        {
            return;
        }

        try
        {
            if (writes is { Count: > 0 })
            {
                // One write of the grouped writer, so one savepoint: a failing step undoes the steps before it.
                await Store.WriteAsync(session =>
                {
                    foreach (var write in writes)
                    {
                        write(session);
                    }

                    return true;
                }, cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            RunEnded(ended);
            await RunAsync(rolledBack, CancellationToken.None).ConfigureAwait(false);
            throw;
        }

        RunEnded(ended);
        await RunAsync(committed, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask RollbackAsync(CancellationToken cancellationToken = default)
    {
        if (!TryComplete(out _, out _, out var rolledBack, out var ended))
        {
            return;
        }

        RunEnded(ended);
        await RunAsync(rolledBack, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Rolls back unless committed or rolled back already.</summary>
    public ValueTask DisposeAsync() => RollbackAsync(CancellationToken.None);

    /// <summary>Adds a write to run in the commit's transaction; it may throw to fail the whole commit.</summary>
    internal void Enlist(Action<WriteSession> write)
    {
        lock (_gate)
        {
            ThrowIfCompleted();
            (_writes ??= []).Add(write);
        }
    }

    /// <summary>Registers in-process cleanup that runs once the unit of work ended, whatever the outcome, before the callbacks.</summary>
    internal void OnEnded(Action action)
    {
        lock (_gate)
        {
            ThrowIfCompleted();
            (_ended ??= []).Add(action);
        }
    }

    private static void RunEnded(List<Action>? ended)
    {
        foreach (var action in ended ?? [])
        {
            action();
        }
    }

    private static async ValueTask RunAsync(List<Func<CancellationToken, ValueTask>>? callbacks, CancellationToken cancellationToken)
    {
        foreach (var callback in callbacks ?? [])
        {
            await callback(cancellationToken).ConfigureAwait(false);
        }
    }

    private bool TryComplete(
        out List<Action<WriteSession>>? writes,
        out List<Func<CancellationToken, ValueTask>>? committed,
        out List<Func<CancellationToken, ValueTask>>? rolledBack,
        out List<Action>? ended)
    {
        lock (_gate)
        {
            (writes, committed, rolledBack, ended) = (_writes, _committed, _rolledBack, _ended);
            if (_completed)
            {
                return false;
            }

            _completed = true;
            (_writes, _committed, _rolledBack, _ended) = (null, null, null, null);
            return true;
        }
    }

    private void ThrowIfCompleted()
    {
        if (_completed)
        {
            throw new InvalidOperationException("This unit of work is already committed or rolled back; writes can no longer enlist in it.");
        }
    }
}
