using Herald.Projections;
using Herald.Sagas;
using Herald.EventSourcing;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;

namespace Herald.Internal;

/// <summary>
/// What a persistence package provides on one database: a store that is the event, checkpoint and snapshot store, the
/// reliability stores built on it, its unit of work and how it starts. <see cref="AdapterRegistration.UsePersistenceStores"/>
/// registers them all.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class PersistenceRegistration<TStore>
    where TStore : class, IEventStore, ICheckpointStore, ISnapshotStore
{
    /// <summary>The package's name, as <see cref="Hosting.HeraldBuilder.UsePersistence"/> reports it in a conflict ("Herald.Postgres").</summary>
    public required string Package { get; init; }

    /// <summary>Creates the one store (a singleton) without touching the database yet.</summary>
    public required Func<IServiceProvider, TStore> CreateStore { get; init; }

    /// <summary>Opens the database (creates or migrates the schema) when the host starts.</summary>
    public required Func<TStore, CancellationToken, Task> StartStore { get; init; }

    /// <summary>Begins a unit of work on the store (one per scope).</summary>
    public required Func<TStore, IUnitOfWork> BeginUnitOfWork { get; init; }

    /// <summary>Creates the dead-letter store on the store's database.</summary>
    public required Func<TStore, IDeadLetterStore> DeadLetters { get; init; }

    /// <summary>Creates the outbox on the store's database.</summary>
    public required Func<TStore, IOutboxStore> Outbox { get; init; }

    /// <summary>Creates the inbox on the store's database, with the host's clock (null: the system clock).</summary>
    public required Func<TStore, TimeProvider?, IInbox> Inbox { get; init; }

    /// <summary>
    /// Creates the idempotency store on the store's database, with the host's clock (null: the system clock) and the prefix
    /// it puts before every key, which scopes them to the host's application (empty without an application name), so
    /// applications sharing the database never see each other's keys.
    /// </summary>
    public required Func<TStore, TimeProvider?, string, IIdempotencyStore> Idempotency { get; init; }

    /// <summary>Creates the saga store on the store's database.</summary>
    public required Func<TStore, ISagaStore> Sagas { get; init; }

    /// <summary>Creates the read-model store on the store's database.</summary>
    public required Func<TStore, IReadModelStore> ReadModels { get; init; }
}
