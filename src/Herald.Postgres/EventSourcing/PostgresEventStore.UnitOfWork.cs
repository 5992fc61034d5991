using Herald.Postgres.Persistence;
using Herald.Persistence;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Postgres.Reliability;
using Herald.Reliability;
using Npgsql;

namespace Herald.Postgres.EventSourcing;

internal sealed partial class PostgresEventStore
{
    /// <summary>
    /// Appends in a unit of work on this store's database: the events are written now, inside its transaction, and become
    /// readable (with the outbox rows and inbox mark enlisted in it) only when it commits; a rollback discards them.
    /// A stale expected version is found here, but, as on every engine, surfaces as a <see cref="ConcurrencyException"/> from
    /// <see cref="IUnitOfWork.CommitAsync"/>, which then rolls everything back. Written now, the version returned is the stored one.
    /// </summary>
    public async ValueTask<long?> AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(unitOfWork);
        ValidateAppend(stream, expectedVersion, events);
        var pending = events.Count == 0 ? null : new PendingAppend(stream, expectedVersion, events, cancellationToken);

        var own = Own(unitOfWork);
        cancellationToken.ThrowIfCancellationRequested();
        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (pending is null)
            {
                // Nothing to write: only the expected version is checked, now.
                return (await CheckEmptyAppendAsync(runtime, stream, expectedVersion, cancellationToken).ConfigureAwait(false)).StreamVersion;
            }

            var appended = await own.ExecuteAsync(
                async (connection, transaction, token) =>
                {
                    var (firstOrdinal, notify) = own.ReserveOrdinals(events.Count);
                    var result = await AppendInTransactionAsync(runtime, connection, transaction, pending, firstOrdinal, notify, token).ConfigureAwait(false);
                    own.Appended(result.LastPosition);
                    return result;
                },
                cancellationToken).ConfigureAwait(false);
            return appended.StreamVersion;
        }
        catch (ConcurrencyException conflict)
        {
            own.Doom(conflict);
            return null;
        }
    }

    /// <summary>The unit of work as this store's own; any other throws, since its writes could not commit with this database's.</summary>
    internal PostgresUnitOfWork Own(IUnitOfWork unitOfWork)
    {
        ArgumentNullException.ThrowIfNull(unitOfWork);
        return OwnUnitOfWork(unitOfWork)
            ?? throw new ArgumentException($"Only a PostgresUnitOfWork of this store can hold its writes, not a {unitOfWork.GetType().Name}.", nameof(unitOfWork));
    }

    /// <summary>Begins a unit of work on this store's database (the DI scope's one when the store is registered by <c>UsePostgres</c>).</summary>
    public PostgresUnitOfWork BeginUnitOfWork() => new(this);

    /// <summary>The unit of work as this store's own, null for one without a transaction here (its callbacks are used instead).</summary>
    internal PostgresUnitOfWork? OwnUnitOfWork(IUnitOfWork? unitOfWork) => unitOfWork switch
    {
        PostgresUnitOfWork postgres when ReferenceEquals(postgres.Store, this) => postgres,
        PostgresUnitOfWork => throw new ArgumentException("The unit of work belongs to another PostgreSQL store; its writes could not commit together.", nameof(unitOfWork)),
        _ => null,
    };

    /// <summary>Opens a pooled connection once the schema is current (for the reliability stores and units of work).</summary>
    internal async ValueTask<NpgsqlConnection> OpenStartedAsync(CancellationToken cancellationToken)
    {
        await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        return await OpenAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Called after a unit of work that appended committed: this instance's reads then wait for its events.</summary>
    internal void UnitOfWorkCommitted(long lastPosition) => OnCommitted(lastPosition);
}
