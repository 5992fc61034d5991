using Herald.Sqlite.EventSourcing;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Sqlite.Internal;
using Herald.Conformance.EventSourcing;
using Herald.Persistence;

namespace Herald.Sqlite.Tests;

/// <summary>
/// The whole event store suite on one SQLite file shared by the tests of this class (each test opens its own store on it,
/// which also exercises the idempotent start). Open transactions are real: one holds the file's write lock until it ends.
/// </summary>
public class SqliteEventStoreConformanceTests(SqliteEventStoreConformanceTests.SharedFile file)
    : EventStoreConformance, IClassFixture<SqliteEventStoreConformanceTests.SharedFile>
{
    protected override bool SupportsOpenTransactions => true;

    protected override async Task<IEventStore> CreateStoreAsync(TimeProvider timeProvider)
    {
        var options = new SqliteStoreOptions { ConnectionString = file.Database.Path };
        Configure(options);
        var store = new SqliteEventStore(options, timeProvider);
        await store.InitializeAsync();
        return store;
    }

    protected override IUnitOfWork BeginUnitOfWork(IEventStore store) => ((SqliteEventStore)store).BeginUnitOfWork();

    /// <summary>Changes the store's settings for a variant of the run; the defaults here.</summary>
    protected virtual void Configure(SqliteStoreOptions options)
    {
    }

    protected override Task<bool> OverwriteHeadersColumnAsync(long position, string? json)
    {
        file.Database.Scalar($"UPDATE herald_events SET headers = {(json is null ? "NULL" : $"'{json}'")} WHERE position = {position}");
        return Task.FromResult(true);
    }

    protected override async Task<IOpenAppend?> BeginOpenAppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default) =>
        new OpenAppend(await ((SqliteEventStore)Store).BeginOpenAppendAsync(stream, expectedVersion, events, cancellationToken));

    /// <summary>The file of this class, deleted after its last test.</summary>
    public sealed class SharedFile : IDisposable
    {
        public TempDatabase Database { get; } = new();

        public void Dispose() => Database.Dispose();
    }

    private sealed class OpenAppend(SqliteOpenAppend open) : IOpenAppend
    {
        public Task CommitAsync(CancellationToken cancellationToken = default) => open.CommitAsync(cancellationToken);

        public Task RollbackAsync(CancellationToken cancellationToken = default) => open.RollbackAsync(cancellationToken);

        public ValueTask DisposeAsync() => open.DisposeAsync();
    }
}

/// <summary>
/// The suite again with the other durability setting, a group delay and groups of at most four writes, so concurrent
/// appends split over many transactions and wait for each other in the queue.
/// </summary>
public sealed class SqliteEventStoreWithSmallGroupsConformanceTests(SqliteEventStoreConformanceTests.SharedFile file)
    : SqliteEventStoreConformanceTests(file)
{
    protected override void Configure(SqliteStoreOptions options)
    {
        options.Synchronous = SqliteSynchronousMode.Normal;
        options.GroupCommitDelay = TimeSpan.FromMilliseconds(1);
        options.MaxWritesPerTransaction = 4;
        options.WriteQueueCapacity = 8;
    }
}
