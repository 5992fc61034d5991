using Herald.Sqlite.EventSourcing;
using Herald.Persistence;
using Herald.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Sqlite.Reliability;
using Herald.Conformance.Reliability;

namespace Herald.Sqlite.Tests.Reliability;

/// <summary>One store on a temp file per test class; the class's tests share it (the suites use keys of their own).</summary>
public sealed class ReliabilityFile : IAsyncLifetime
{
    private readonly TempDatabase _database = new();

    internal SqliteEventStore Store { get; private set; } = null!;

    /// <summary>The file, for a second store on it (as a second process opens it).</summary>
    internal string Path => _database.Path;

    public async Task InitializeAsync() => Store = await SqliteEventStore.OpenAsync(_database.Path);

    public async Task DisposeAsync()
    {
        await Store.DisposeAsync();
        _database.Dispose();
    }
}

public sealed class SqliteDeadLetterStoreConformanceTests(ReliabilityFile file) : DeadLetterStoreConformance, IClassFixture<ReliabilityFile>
{
    protected override ValueTask<IDeadLetterStore> CreateStoreAsync() => ValueTask.FromResult<IDeadLetterStore>(new SqliteDeadLetterStore(file.Store));

    protected override async ValueTask<(IDeadLetterStore Store, IAsyncDisposable? Owner)> OpenSecondStoreAsync(IDeadLetterStore first)
    {
        var second = await SqliteEventStore.OpenAsync(file.Path);
        return (new SqliteDeadLetterStore(second), second);
    }
}

public sealed class SqliteOutboxStoreConformanceTests(ReliabilityFile file) : OutboxStoreConformance, IClassFixture<ReliabilityFile>
{
    protected override ValueTask<IOutboxStore> CreateStoreAsync() => ValueTask.FromResult<IOutboxStore>(new SqliteOutboxStore(file.Store));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IOutboxStore store) => ValueTask.FromResult<IUnitOfWork>(file.Store.BeginUnitOfWork());
}

public sealed class SqliteInboxConformanceTests(ReliabilityFile file) : InboxConformance, IClassFixture<ReliabilityFile>
{
    protected override ValueTask<IInbox> CreateInboxAsync(TimeProvider timeProvider) => ValueTask.FromResult<IInbox>(new SqliteInbox(file.Store, timeProvider));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IInbox inbox) => ValueTask.FromResult<IUnitOfWork>(file.Store.BeginUnitOfWork());
}

public sealed class SqliteIdempotencyStoreConformanceTests(ReliabilityFile file) : IdempotencyStoreConformance, IClassFixture<ReliabilityFile>
{
    protected override ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(new SqliteIdempotencyStore(file.Store, timeProvider));

    protected override async ValueTask<(IIdempotencyStore Store, IAsyncDisposable? Owner)> OpenSecondStoreAsync(IIdempotencyStore first, TimeProvider timeProvider)
    {
        var second = await SqliteEventStore.OpenAsync(file.Path);
        return (new SqliteIdempotencyStore(second, timeProvider), second);
    }
}
