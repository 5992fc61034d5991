using Herald.Internal;
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
internal sealed class SqliteUnitOfWork : UnitOfWorkBase
{
    private List<Action<WriteSession>>? _writes;
    private List<Action>? _ended;

    /// <summary>Creates a unit of work whose writes commit through <paramref name="store"/>'s writer.</summary>
    public SqliteUnitOfWork(SqliteEventStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        Store = store;
    }

    /// <summary>The store whose file this unit of work writes to.</summary>
    internal SqliteEventStore Store { get; }

    /// <inheritdoc />
    public override async ValueTask CommitAsync(CancellationToken cancellationToken = default)
    {
        if (!TryComplete(out var writes, out var ended, out var callbacks))
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
        catch (Exception ex)
        {
            RunEnded(ended);
            await callbacks.CommitFailedAsync(ex).ConfigureAwait(false);
            throw;
        }

        RunEnded(ended);
        await callbacks.CommittedAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask RollbackAsync(CancellationToken cancellationToken = default)
    {
        if (!TryComplete(out _, out var ended, out var callbacks))
        {
            return;
        }

        RunEnded(ended);
        await callbacks.RolledBackAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Adds a write to run in the commit's transaction; it may throw to fail the whole commit.</summary>
    internal void Enlist(Action<WriteSession> write)
    {
        lock (Gate)
        {
            ThrowIfCompleted();
            (_writes ??= []).Add(write);
        }
    }

    /// <summary>Registers in-process cleanup that runs once the unit of work ended, whatever the outcome, before the callbacks.</summary>
    internal void OnEnded(Action action)
    {
        lock (Gate)
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

    private bool TryComplete(out List<Action<WriteSession>>? writes, out List<Action>? ended, out Callbacks callbacks)
    {
        lock (Gate)
        {
            (writes, ended) = (_writes, _ended);
            if (!TryComplete(out callbacks))
            {
                return false;
            }

            (_writes, _ended) = (null, null);
            return true;
        }
    }
}
