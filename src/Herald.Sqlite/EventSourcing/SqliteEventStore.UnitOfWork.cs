using Herald.Internal;
using Herald.Sqlite.Persistence;
using Herald.Persistence;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Reliability;
using Herald.Sqlite.Reliability;

namespace Herald.Sqlite.EventSourcing;

internal sealed partial class SqliteEventStore
{
    /// <summary>
    /// Appends in a unit of work on this file: the events commit in the same transaction as the outbox rows and inbox mark
    /// enlisted in it, or not at all. The append runs when <paramref name="unitOfWork"/> commits, so a conflict with the
    /// expected version (a <see cref="ConcurrencyException"/>) is thrown by its <see cref="IUnitOfWork.CommitAsync"/>; so is
    /// a NoStream append whose stream was started again and deleted meanwhile, which would land above the version returned.
    /// </summary>
    public async ValueTask<long?> AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(unitOfWork);
        AppendValidation.Validate(stream, expectedVersion, events, _options.MaxEventBytes);
        var own = Own(unitOfWork);
        cancellationToken.ThrowIfCancellationRequested();
        var copy = events.ToArray();
        var planned = await EnlistedAppends.PlanAsync(expectedVersion, copy.Length, () => ReadStreamForPlanAsync(stream, copy[0].MessageId, cancellationToken)).ConfigureAwait(false);
        own.Enlist(session =>
        {
            var result = session.Append(stream, expectedVersion, copy);
            if (copy.Length > 0)
            {
                // Only a NoStream append can land elsewhere, and it passed its check: the stream read as version 0.
                EnlistedAppends.ThrowUnlessAsPromised(stream, expectedVersion, 0, result.StreamVersion, planned);
            }
        });
        return planned;
    }

    // The stream's last version (deleted ones included) and where the first event id is stored, if it is: what a NoStream
    // append's place depends on.
    private ValueTask<(long LastVersion, long? FirstIdStoredAt)> ReadStreamForPlanAsync(string stream, Guid firstId, CancellationToken cancellationToken) =>
        ReadAsync(reader =>
        {
            var command = reader.Command(
                "SELECT s.version, (SELECT e.version FROM herald_events e WHERE e.stream_id = s.stream_id AND e.event_id = $p1) FROM herald_streams s WHERE s.name = $p0",
                2);
            command.Parameters[0].Value = stream;
            command.Parameters[1].Value = firstId.ToByteArray(bigEndian: true);
            using var row = command.ExecuteReader();
            return row.Read() ? (row.GetInt64(0), row.IsDBNull(1) ? (long?)null : row.GetInt64(1)) : (0L, null);
        }, cancellationToken);

    /// <summary>Begins a unit of work on this file (the DI scope's one when the store is registered by <c>UseSqlite</c>).</summary>
    public SqliteUnitOfWork BeginUnitOfWork() => new(this);

    /// <summary>The unit of work as this file's own; any other throws, since its writes could not commit with this file's.</summary>
    internal SqliteUnitOfWork Own(IUnitOfWork unitOfWork)
    {
        ArgumentNullException.ThrowIfNull(unitOfWork);
        return OwnUnitOfWork(unitOfWork)
            ?? throw new ArgumentException($"Only a SqliteUnitOfWork on this store's file can hold its writes, not a {unitOfWork.GetType().Name}.", nameof(unitOfWork));
    }

    /// <summary>The unit of work as this file's own, null for one without a transaction here (its callbacks are used instead).</summary>
    internal SqliteUnitOfWork? OwnUnitOfWork(IUnitOfWork? unitOfWork) => unitOfWork switch
    {
        SqliteUnitOfWork sqlite when ReferenceEquals(sqlite.Store, this) => sqlite,
        SqliteUnitOfWork => throw new ArgumentException("The unit of work belongs to another SQLite store; its writes could not commit together.", nameof(unitOfWork)),
        _ => null,
    };
}
