using Herald.Persistence;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Reliability;
using Herald.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Conformance.Reliability;

namespace Herald.Postgres.Tests.Reliability;

/// <summary>One store on a schema of its own per test class, dropped afterwards; the class's tests share it (the suites use keys of their own).</summary>
public sealed class ReliabilitySchema : IAsyncLifetime
{
    public string Schema { get; } = PostgresTestDatabase.NewSchema();

    internal PostgresEventStore Store { get; private set; } = null!;

    /// <summary>The class's one outbox.</summary>
    internal PostgresOutboxStore Outbox { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = Schema });
        Outbox = new PostgresOutboxStore(Store);
    }

    public async Task DisposeAsync()
    {
        await Store.DisposeAsync();
        await PostgresTestDatabase.DropSchemaAsync(Schema);
    }
}

public sealed class PostgresDeadLetterStoreConformanceTests(ReliabilitySchema schema) : DeadLetterStoreConformance, IClassFixture<ReliabilitySchema>
{
    protected override ValueTask<IDeadLetterStore> CreateStoreAsync() => ValueTask.FromResult<IDeadLetterStore>(new PostgresDeadLetterStore(schema.Store));
}

public sealed class PostgresOutboxStoreConformanceTests(ReliabilitySchema schema) : OutboxStoreConformance, IClassFixture<ReliabilitySchema>
{
    protected override ValueTask<IOutboxStore> CreateStoreAsync() => ValueTask.FromResult<IOutboxStore>(schema.Outbox);

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IOutboxStore store) => ValueTask.FromResult<IUnitOfWork>(schema.Store.BeginUnitOfWork());
}

public sealed class PostgresInboxConformanceTests(ReliabilitySchema schema) : InboxConformance, IClassFixture<ReliabilitySchema>
{
    protected override ValueTask<IInbox> CreateInboxAsync(TimeProvider timeProvider) => ValueTask.FromResult<IInbox>(new PostgresInbox(schema.Store, timeProvider));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IInbox inbox) => ValueTask.FromResult<IUnitOfWork>(schema.Store.BeginUnitOfWork());
}

public sealed class PostgresIdempotencyStoreConformanceTests(ReliabilitySchema schema) : IdempotencyStoreConformance, IClassFixture<ReliabilitySchema>
{
    protected override ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(new PostgresIdempotencyStore(schema.Store, timeProvider));
}
