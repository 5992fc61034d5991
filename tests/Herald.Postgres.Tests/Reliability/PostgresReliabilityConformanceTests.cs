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

    protected override async ValueTask<(IDeadLetterStore Store, IAsyncDisposable? Owner)> OpenSecondStoreAsync(IDeadLetterStore first)
    {
        var second = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = schema.Schema });
        return (new PostgresDeadLetterStore(second), second);
    }

    [Fact]
    public async Task Add_WithAnEndpointHoldingU0000_IsRefusedNamingTheEndpoint()
    {
        // The endpoint is where a retry sends the message, so it is not made readable like the error texts: refused, where
        // the write failed with a bare 22021.
        var refused = await Assert.ThrowsAsync<ArgumentException>(
            async () => await new PostgresDeadLetterStore(schema.Store).AddAsync(NewDeadLetter(endpoint: "orders\0")));

        Assert.Contains("dead letter's endpoint 'orders\\u0000' holds the character U+0000", refused.Message, StringComparison.Ordinal);
    }
}

public sealed class PostgresOutboxStoreConformanceTests(ReliabilitySchema schema) : OutboxStoreConformance, IClassFixture<ReliabilitySchema>
{
    protected override ValueTask<IOutboxStore> CreateStoreAsync() => ValueTask.FromResult<IOutboxStore>(schema.Outbox);

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IOutboxStore store) => ValueTask.FromResult<IUnitOfWork>(schema.Store.BeginUnitOfWork());

    [Fact]
    public async Task Add_OfARowHoldingU0000_IsRefusedNamingTheField_AndWritesNoRowOfTheCall()
    {
        // PostgreSQL's text cannot hold it: the batch failed with a bare 22021, naming neither the row nor the field. The
        // message is sent as stored, so it is refused rather than altered.
        var fine = NewMessage();
        var destination = NewMessage() with { Destination = "orders\0" };
        var correlation = NewMessage() with { Envelope = NewMessage().Envelope with { CorrelationId = "order-1\0" } };
        var unitOfWork = schema.Store.BeginUnitOfWork();

        var refused = await Assert.ThrowsAsync<ArgumentException>(async () => await schema.Outbox.AddAsync([fine, destination]));
        var inUnit = await Assert.ThrowsAsync<ArgumentException>(async () => await schema.Outbox.AddAsync([fine, correlation], unitOfWork));
        await unitOfWork.CommitAsync();

        Assert.Equal("messages", refused.ParamName);
        Assert.Contains($"destination 'orders\\u0000' of outbox message {destination.Id} holds the character U+0000", refused.Message, StringComparison.Ordinal);
        Assert.Contains($"correlation id 'order-1\\u0000' of outbox message {correlation.Id}", inUnit.Message, StringComparison.Ordinal);
        Assert.Null(await schema.Outbox.GetAsync(fine.Id));
    }
}

public sealed class PostgresInboxConformanceTests(ReliabilitySchema schema) : InboxConformance, IClassFixture<ReliabilitySchema>
{
    protected override ValueTask<IInbox> CreateInboxAsync(TimeProvider timeProvider) => ValueTask.FromResult<IInbox>(new PostgresInbox(schema.Store, timeProvider));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IInbox inbox) => ValueTask.FromResult<IUnitOfWork>(schema.Store.BeginUnitOfWork());

    [Fact]
    public async Task Mark_ForAnEndpointHoldingU0000_IsRefusedNamingTheEndpoint()
    {
        var refused = await Assert.ThrowsAsync<ArgumentException>(
            async () => await new PostgresInbox(schema.Store).TryMarkHandledAsync("orders\0", Guid.CreateVersion7(), TimeSpan.FromMinutes(1)));

        Assert.Equal("endpoint", refused.ParamName);
        Assert.Contains("inbox endpoint 'orders\\u0000' holds the character U+0000", refused.Message, StringComparison.Ordinal);
    }
}

public sealed class PostgresIdempotencyStoreConformanceTests(ReliabilitySchema schema) : IdempotencyStoreConformance, IClassFixture<ReliabilitySchema>
{
    protected override ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(new PostgresIdempotencyStore(schema.Store, timeProvider));

    protected override async ValueTask<(IIdempotencyStore Store, IAsyncDisposable? Owner)> OpenSecondStoreAsync(IIdempotencyStore first, TimeProvider timeProvider)
    {
        var second = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = schema.Schema });
        return (new PostgresIdempotencyStore(second, timeProvider), second);
    }

    [Fact]
    public async Task AKeyHoldingU0000_IsRefusedNamingTheKey()
    {
        // PostgreSQL's text cannot hold it: each call failed with a bare 22021.
        var store = new PostgresIdempotencyStore(schema.Store, TimeProvider.System);

        var refused = await Assert.ThrowsAsync<ArgumentException>(async () => await store.TryAcquireAsync("order-1\0", TimeSpan.FromMinutes(1)));
        await Assert.ThrowsAsync<ArgumentException>(async () => await store.CompleteAsync("order-1\0", Guid.NewGuid(), new byte[1], TimeSpan.FromMinutes(1)));
        await Assert.ThrowsAsync<ArgumentException>(async () => await store.ReleaseAsync("order-1\0", Guid.NewGuid()));
        await Assert.ThrowsAsync<ArgumentException>(async () => await store.RenewAsync("order-1\0", Guid.NewGuid(), TimeSpan.FromMinutes(1)));

        Assert.Equal("key", refused.ParamName);
        Assert.Contains("idempotency key 'order-1\\u0000' holds the character U+0000", refused.Message, StringComparison.Ordinal);
    }
}
