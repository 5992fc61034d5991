using Herald.Internal;
using Herald.Persistence;
using Herald.EventSourcing;
using Herald.Postgres.EventSourcing;
using Herald.Reliability;
using Npgsql;

namespace Herald.Postgres.Persistence;

/// <summary>
/// The unit of work on a <see cref="PostgresEventStore"/>'s database: one <see cref="NpgsqlTransaction"/> on one pooled
/// connection, opened when the first write enlists (a handler that writes nothing takes no connection). Outbox rows, the
/// inbox mark and appends made with
/// <see cref="PostgresEventStore.AppendAsync(string, ExpectedVersion, IReadOnlyList{Herald.Messages.Envelope}, IUnitOfWork, CancellationToken)"/>
/// run in it at once and commit together at <see cref="CommitAsync"/>; a rollback, or a scope that ends first, discards them.
/// </summary>
/// <remarks>
/// The transaction stays open while the handlers run, so it holds the rows it wrote (a concurrent duplicate's inbox mark
/// waits for it) and holds back readers of the global log (docs/postgres.md): keep handlers short. A statement that
/// failed in the database aborts the transaction; its commit then throws and rolls back instead of committing nothing.
/// </remarks>
internal sealed class PostgresUnitOfWork : UnitOfWorkBase
{
    // Events one transaction may hold (the ordinal is the low 20 bits of a position).
    private const int MaxOrdinals = 1 << 20;

    private readonly SemaphoreSlim _connectionGate = new(1, 1);
    private List<(object Owner, IDeferredWrites Writes)>? _deferred;
    private NpgsqlConnection? _connection;
    private NpgsqlTransaction? _transaction;
    private bool _aborted;
    private bool _handedOut;
    private Exception? _doomed;
    private int _nextOrdinal;
    private long _lastPosition;

    internal PostgresUnitOfWork(PostgresEventStore store) => Store = store;

    /// <summary>The store whose database this unit of work writes to.</summary>
    internal PostgresEventStore Store { get; }

    /// <summary>True once a write opened the transaction.</summary>
    internal bool HasTransaction => Volatile.Read(ref _transaction) is not null;

    /// <inheritdoc />
    public override async ValueTask CommitAsync(CancellationToken cancellationToken = default)
    {
        List<(object Owner, IDeferredWrites Writes)>? deferred;
        Callbacks callbacks;
        lock (Gate)
        {
            // Taken with the completion, so no write can be deferred past the flush below.
            deferred = _deferred;
            if (!TryComplete(out callbacks))
            {
                return;
            }

            _deferred = null;
        }

        await _connectionGate.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            bool aborted;
            bool handedOut;
            Exception? doomed;
            lock (Gate)
            {
                (aborted, handedOut, doomed) = (_aborted, _handedOut, _doomed);
            }

            if (doomed is not null)
            {
                // A write found a conflict early; like every engine, the unit of work reports it here and writes nothing.
                if (_transaction is not null && _connection is { State: System.Data.ConnectionState.Open })
                {
                    await _transaction.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
                }

                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(doomed);
            }

            // The deferred writes run in the transaction just before it commits; one that fails fails the commit as any
            // other failure here does (an aborted unit skips them: its commit fails with the first cause anyway).
            if (!aborted && deferred is not null)
            {
                foreach (var (_, writes) in deferred)
                {
                    var transaction = await BeginAsync(cancellationToken).ConfigureAwait(false);
                    await writes.FlushAsync(_connection!, transaction, cancellationToken).ConfigureAwait(false);
                }
            }

            if (_transaction is not null)
            {
                if (aborted)
                {
                    throw new InvalidOperationException("A statement of this unit of work failed in the database, so its transaction was aborted; it was rolled back instead of committed.");
                }

                if (handedOut && await IsAbortedAsync(_connection!, _transaction, cancellationToken).ConfigureAwait(false))
                {
                    throw new InvalidOperationException(
                        "A statement the application ran on this unit of work's transaction (GetNpgsqlTransactionAsync) failed in the database, so its transaction was aborted; it was rolled back instead of committed.");
                }

                await _transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
                if (_lastPosition > 0)
                {
                    Store.UnitOfWorkCommitted(_lastPosition);
                }
            }
        }
        catch (Exception ex)
        {
            await ReleaseAsync().ConfigureAwait(false);
            _connectionGate.Release();
            await callbacks.CommitFailedAsync(ex).ConfigureAwait(false);
            throw;
        }

        await ReleaseAsync().ConfigureAwait(false);
        _connectionGate.Release();
        await callbacks.CommittedAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask RollbackAsync(CancellationToken cancellationToken = default)
    {
        if (!TryComplete(out var callbacks))
        {
            return;
        }

        lock (Gate)
        {
            // The writes gathered for the commit die with the rollback: a later commit does nothing, as on every engine.
            _deferred = null;
        }

        await _connectionGate.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            // Closing the connection rolls back too; the explicit rollback returns a clean connection to the pool.
            if (_transaction is not null && _connection is { State: System.Data.ConnectionState.Open })
            {
                await _transaction.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }
        catch (NpgsqlException)
        {
            // The connection broke: the server has discarded the transaction already.
        }
        finally
        {
            await ReleaseAsync().ConfigureAwait(false);
            _connectionGate.Release();
        }

        await callbacks.RolledBackAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Runs <paramref name="work"/> on the transaction, opening it on first use; calls are serialised (one connection).
    /// A database error marks the transaction aborted, so the commit fails rather than silently committing nothing.
    /// </summary>
    internal async ValueTask<T> ExecuteAsync<T>(Func<NpgsqlConnection, NpgsqlTransaction, CancellationToken, Task<T>> work, CancellationToken cancellationToken)
    {
        lock (Gate)
        {
            ThrowIfCompleted();
        }

        await _connectionGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            lock (Gate)
            {
                ThrowIfCompleted();
            }

            var transaction = await BeginAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                return await work(_connection!, transaction, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not ConcurrencyException)
            {
                lock (Gate)
                {
                    _aborted = true;
                }

                throw;
            }
        }
        finally
        {
            _connectionGate.Release();
        }
    }

    /// <summary>
    /// The writes <paramref name="owner"/> defers to the commit in this unit of work, created by <paramref name="create"/> on
    /// first use: they run in the transaction just before it commits, in the order their owners first deferred, so a store
    /// can gather the changes of many events into a few statements.
    /// </summary>
    internal T Defer<T>(object owner, Func<T> create)
        where T : class, IDeferredWrites
    {
        lock (Gate)
        {
            ThrowIfCompleted();
            _deferred ??= [];
            foreach (var (known, writes) in _deferred)
            {
                if (ReferenceEquals(known, owner))
                {
                    return (T)writes;
                }
            }

            var created = create();
            _deferred.Add((owner, created));
            return created;
        }
    }

    /// <summary>
    /// The transaction of this unit of work, begun now if no write has begun it: the application's own statements run in it
    /// and commit with Herald's writes. Run them one at a time, not concurrently with other writes of the same unit of work.
    /// </summary>
    internal ValueTask<NpgsqlTransaction> GetTransactionAsync(CancellationToken cancellationToken)
    {
        lock (Gate)
        {
            _handedOut = true;
        }

        return ExecuteAsync((_, transaction, _) => Task.FromResult(transaction), cancellationToken);
    }

    /// <summary>Fails the commit with <paramref name="conflict"/> (the first one wins): a write found that it cannot commit.</summary>
    internal void Doom(Exception conflict)
    {
        lock (Gate)
        {
            _doomed ??= conflict;
        }
    }

    /// <summary>Numbers the next <paramref name="count"/> events of this transaction; notify is true for the first append only.</summary>
    internal (int FirstOrdinal, bool Notify) ReserveOrdinals(int count)
    {
        if (_nextOrdinal + count > MaxOrdinals)
        {
            throw new InvalidOperationException($"One unit of work may append at most {MaxOrdinals} events.");
        }

        var first = _nextOrdinal;
        _nextOrdinal += count;
        return (first, first == 0);
    }

    /// <summary>Records the last position an append of this transaction wrote.</summary>
    internal void Appended(long lastPosition) => _lastPosition = Math.Max(_lastPosition, lastPosition);

    // The transaction, begun on a pooled connection if nothing began it yet; called holding the connection gate.
    private async ValueTask<NpgsqlTransaction> BeginAsync(CancellationToken cancellationToken)
    {
        if (_transaction is { } begun)
        {
            return begun;
        }

        var connection = await Store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            (_transaction, _connection) = (transaction, connection);
            return transaction;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    // PostgreSQL answers the COMMIT of an aborted transaction with a silent ROLLBACK. A failed statement of Herald's marks the
    // unit of work aborted; one the application ran on the transaction it was handed is only found by asking.
    private static async Task<bool> IsAbortedAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, CancellationToken cancellationToken)
    {
        await using var probe = new NpgsqlCommand("SELECT 1", connection, transaction);
        try
        {
            await probe.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
            return false;
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.InFailedSqlTransaction)
        {
            return true;
        }
    }

    private async ValueTask ReleaseAsync()
    {
        var (transaction, connection) = (_transaction, _connection);
        (_transaction, _connection) = (null, null);
        if (transaction is not null)
        {
            await transaction.DisposeAsync().ConfigureAwait(false);
        }

        if (connection is not null)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
        }
    }
}

/// <summary>Writes a store gathered in a unit of work, run in its transaction just before the commit.</summary>
internal interface IDeferredWrites
{
    /// <summary>Runs the writes on the unit of work's transaction.</summary>
    Task FlushAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, CancellationToken cancellationToken);
}
