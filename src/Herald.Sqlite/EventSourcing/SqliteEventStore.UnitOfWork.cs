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
    /// expected version (a <see cref="ConcurrencyException"/>) is thrown by its <see cref="IUnitOfWork.CommitAsync"/>.
    /// </summary>
    public ValueTask AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(unitOfWork);
        AppendValidation.Validate(stream, expectedVersion, events, _options.MaxEventBytes);
        cancellationToken.ThrowIfCancellationRequested();
        var copy = events.ToArray();
        Own(unitOfWork).Enlist(session => session.Append(stream, expectedVersion, copy));
        return ValueTask.CompletedTask;
    }

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
