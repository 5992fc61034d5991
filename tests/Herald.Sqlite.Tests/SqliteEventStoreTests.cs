using Herald.Sqlite.Schema;
using Herald.Sqlite.EventSourcing;
using System.Text;
using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Messages;
using Herald.Sqlite.Internal;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Herald.Sqlite.Tests;

/// <summary>What only the SQLite store has to show: its schema, its file surviving a crash, several stores on one file, grouped writes.</summary>
public sealed class SqliteEventStoreTests : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    [Fact]
    public async Task Open_CreatesTheSchemaOnce_AndReopeningTheFileIsIdempotent()
    {
        for (var i = 0; i < 3; i++)
        {
            await using var store = await SqliteEventStore.OpenAsync(_database.Path);
            await store.AppendAsync("order-1", ExpectedVersion.Any, [NewEvent()]);
        }

        Assert.Equal((long)SqliteSchema.Migrations.Count, _database.Scalar("SELECT COUNT(*) FROM herald_schema"));
        Assert.Equal(SqliteSchema.CurrentVersion, _database.Scalar("SELECT MAX(version) FROM herald_schema"));
        Assert.Equal("wal", _database.Scalar("PRAGMA journal_mode"));
        Assert.Equal(3L, _database.Scalar("SELECT COUNT(*) FROM herald_events"));
    }

    [Fact]
    public async Task Open_FileWithANewerSchemaVersion_FailsClearlyAndChangesNothing()
    {
        await using (var store = await SqliteEventStore.OpenAsync(_database.Path))
        {
            await store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()]);
        }

        var newer = SqliteSchema.CurrentVersion + 1;
        _database.Scalar($"INSERT INTO herald_schema (version, description, applied_at) VALUES ({newer}, 'from a newer Herald', '2030-01-01')");

        var opening = await Assert.ThrowsAsync<SqliteSchemaVersionException>(() => SqliteEventStore.OpenAsync(_database.Path));
        Assert.Equal((newer, SqliteSchema.CurrentVersion), (opening.FileVersion, opening.SupportedVersion));
        Assert.Contains($"schema version {newer}", opening.Message, StringComparison.Ordinal);
        Assert.Contains("upgrade", opening.Message, StringComparison.OrdinalIgnoreCase);

        // A store created without opening fails the same way on first use.
        await using var lazy = new SqliteEventStore(new SqliteStoreOptions { ConnectionString = _database.Path });
        await Assert.ThrowsAsync<SqliteSchemaVersionException>(() => lazy.AppendAsync("order-2", ExpectedVersion.Any, [NewEvent()]).AsTask());

        Assert.Equal(SqliteSchema.Migrations.Count + 1L, _database.Scalar("SELECT COUNT(*) FROM herald_schema"));
        Assert.Equal(1L, _database.Scalar("SELECT COUNT(*) FROM herald_events"));
    }

    [Fact]
    public async Task Data_SurvivesDisposingAndReopeningTheStore()
    {
        var events = new[] { NewEvent(), NewEvent(), NewEvent() };
        AppendResult first;
        await using (var store = await SqliteEventStore.OpenAsync(_database.Path))
        {
            first = await store.AppendAsync("order-1", ExpectedVersion.NoStream, events);
            await store.AppendAsync("order-2", ExpectedVersion.NoStream, [NewEvent()]);
            await store.DeleteStreamAsync("order-2", ExpectedVersion.Exactly(1));
            await store.SetCheckpointAsync("projection", first.LastPosition);
            await store.SaveSnapshotAsync(new Snapshot("order-1", 3, "order-state", 1, "{\"n\":3}"u8.ToArray(), EventTime));
        }

        await using var reopened = await SqliteEventStore.OpenAsync(_database.Path);

        Assert.Equal(events.Select(e => e.MessageId), (await ReadStream(reopened, "order-1")).Select(e => e.EventId));
        Assert.Equal(3, await reopened.GetStreamVersionAsync("order-1"));
        Assert.Equal(0, await reopened.GetStreamVersionAsync("order-2"));
        Assert.Equal(events.Select(e => e.MessageId), (await ReadAll(reopened, 0)).Select(e => e.EventId));
        Assert.Equal(first.LastPosition + 1, await reopened.GetLastPositionAsync());
        Assert.Equal(first.LastPosition, await reopened.GetCheckpointAsync("projection"));
        Assert.Equal(3, (await reopened.LoadSnapshotAsync("order-1"))!.Version);

        Assert.Equal(first, await reopened.AppendAsync("order-1", ExpectedVersion.NoStream, events));
        var next = await reopened.AppendAsync("order-1", ExpectedVersion.Exactly(3), [NewEvent()]);
        Assert.Equal((4L, first.LastPosition + 2), (next.StreamVersion, next.LastPosition));
    }

    [Fact]
    public async Task Data_SurvivesACrash_TheFilesAsTheProcessLeftThem()
    {
        // While the store is still open (nothing flushed or checkpointed on purpose), copy the database and its write-ahead
        // log as a crash would leave them, and open the copy: every committed append must be there.
        using var crashed = new TempDatabase();
        await using var store = await SqliteEventStore.OpenAsync(_database.Path);
        var results = new List<AppendResult>();
        for (var i = 0; i < 20; i++)
        {
            results.Add(await store.AppendAsync($"order-{i % 3}", ExpectedVersion.Any, [NewEvent(), NewEvent()]));
        }

        Assert.True(File.Exists(_database.Path + "-wal"), "the write-ahead log holds the commits");
        File.Copy(_database.Path, crashed.Path);
        File.Copy(_database.Path + "-wal", crashed.Path + "-wal");

        await using var recovered = await SqliteEventStore.OpenAsync(crashed.Path);

        Assert.Equal(results[^1].LastPosition, await recovered.GetLastPositionAsync());
        Assert.Equal(40, (await ReadAll(recovered, 0)).Count);
    }

    [Fact]
    public async Task Append_AfterTheFileWasDeletedWhileOpen_FailsInsteadOfReportingALostWrite()
    {
        // SQLite keeps writing to the unlinked file, which vanishes with the store's last connection: an append that
        // returned would be lost. It must fail, and so must the grouped writes and the writes at once after it.
        await using var store = await SqliteEventStore.OpenAsync(_database.Path);
        await store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()]);
        Assert.True(store.WriteAtOnce(_ => true, Deadline), "the connection of writes at once is open before the file goes");
        foreach (var suffix in new[] { "", "-wal", "-shm" })
        {
            File.Delete(_database.Path + suffix);
        }

        var appending = await Assert.ThrowsAsync<IOException>(() => store.AppendAsync("order-1", ExpectedVersion.Exactly(1), [NewEvent()]).AsTask());
        Assert.Contains("deleted, moved or replaced", appending.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<IOException>(() => store.SetCheckpointAsync("projection", 1).AsTask());
        Assert.Throws<IOException>(() => store.WriteAtOnce(_ => true, Deadline));
    }

    [Fact]
    public async Task ConnectionsOpenedAfterTheFileWasDeleted_FailAndLeaveNoEmptyFileInItsPlace()
    {
        // The connection of writes at once (queue lease renewals) and an open append's connection are opened on demand;
        // they created a new empty database at the path, where the first "write" succeeded, and the next start opened it.
        await using var store = await SqliteEventStore.OpenAsync(_database.Path);
        await store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()]);
        foreach (var suffix in new[] { "", "-wal", "-shm" })
        {
            File.Delete(_database.Path + suffix);
        }

        Assert.ThrowsAny<Exception>(() => store.WriteAtOnce(_ => true, Deadline));
        await Assert.ThrowsAnyAsync<Exception>(() => store.BeginOpenAppendAsync("order-2", ExpectedVersion.NoStream, [NewEvent()]));
        Assert.False(File.Exists(_database.Path), "no empty database was created in the deleted file's place");
    }

    [Fact]
    public async Task Append_AfterTheFileWasReplacedWhileOpen_Fails()
    {
        using var other = new TempDatabase();
        await using (var replacement = await SqliteEventStore.OpenAsync(other.Path))
        {
            await replacement.AppendAsync("invoice-1", ExpectedVersion.NoStream, [NewEvent()]);
        }

        await using var store = await SqliteEventStore.OpenAsync(_database.Path);
        await store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()]);
        File.Move(other.Path, _database.Path, overwrite: true);

        await Assert.ThrowsAsync<IOException>(() => store.AppendAsync("order-1", ExpectedVersion.Exactly(1), [NewEvent()]).AsTask());
    }

    [Fact]
    public async Task TwoStoresOnOneFile_SeeEachOthersEventsThroughTheRecheck()
    {
        await using var writer = await SqliteEventStore.OpenAsync(_database.Path);
        await using var reader = await SqliteEventStore.OpenAsync(_database.Path, o => o.ExternalWritesCheckInterval = TimeSpan.FromMilliseconds(50));
        var head = await reader.GetLastPositionAsync();

        // Nothing in the reader's process appends, so only the re-check of the file can wake it.
        var waiting = reader.WaitForEventsAsync(head).AsTask();
        Assert.False(waiting.IsCompleted);
        var appended = await writer.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent(), NewEvent()]);
        await waiting.WaitAsync(Deadline);

        Assert.Equal([1L, 2L], (await ReadAll(reader, head)).Select(e => e.Version));
        Assert.Equal(appended.LastPosition, await reader.GetLastPositionAsync());
        await Assert.ThrowsAsync<ConcurrencyException>(() => reader.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()]).AsTask());
        Assert.Equal(3, (await reader.AppendAsync("order-1", ExpectedVersion.Exactly(2), [NewEvent()])).StreamVersion);
        Assert.Equal(3, (await ReadStream(writer, "order-1")).Count);
    }

    [Fact]
    public async Task TwoStoresOnOneFile_ConcurrentWritersKeepVersionsContiguousAndASubscriptionSeesAll()
    {
        await using var first = await SqliteEventStore.OpenAsync(_database.Path, o => o.ExternalWritesCheckInterval = TimeSpan.FromMilliseconds(50));
        await using var second = await SqliteEventStore.OpenAsync(_database.Path, o => o.ExternalWritesCheckInterval = TimeSpan.FromMilliseconds(50));
        var seen = new List<RecordedEvent>();
        await using var subscription = await EventSubscription.StartNewAsync(second, second, (e, _) =>
        {
            lock (seen)
            {
                seen.Add(e);
            }

            return ValueTask.CompletedTask;
        }, new EventSubscriptionOptions { SubscriptionId = "follower" });

        var stores = new[] { first, second };
        await Task.WhenAll(Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < 10; i++)
            {
                await stores[(w + i) % 2].AppendAsync("order-shared", ExpectedVersion.Any, [NewEvent()]);
            }
        })));

        var events = await ReadStream(first, "order-shared");
        Assert.Equal(Enumerable.Range(1, 80).Select(v => (long)v), events.Select(e => e.Version));
        await subscription.WaitForPositionAsync(events[^1].Position).WaitAsync(Deadline);
        lock (seen)
        {
            Assert.Equal(events.Select(e => e.EventId), seen.Select(e => e.EventId));
        }
    }

    [Fact]
    public async Task InvalidAppends_WriteNothingToTheFile()
    {
        await using var store = await SqliteEventStore.OpenAsync(_database.Path, o => o.MaxEventBytes = 1000);
        var stored = new[] { NewEvent(), NewEvent() };
        await store.AppendAsync("order-1", ExpectedVersion.NoStream, stored);
        var before = Counts();

        foreach (var name in new[] { "", "order 1", "order-\n1", "$all", new string('x', StreamName.MaxLength + 1) })
        {
            await Assert.ThrowsAnyAsync<ArgumentException>(() => store.AppendAsync(name, ExpectedVersion.Any, [NewEvent()]).AsTask());
        }

        var oversized = NewEvent() with { Body = new byte[1001] };
        var tooLarge = await Assert.ThrowsAsync<EventTooLargeException>(() => store.AppendAsync("order-2", ExpectedVersion.Any, [NewEvent(), oversized]).AsTask());
        Assert.Equal(oversized.MessageId, tooLarge.EventId);

        // A new first event followed by one the stream already has: the unique key refuses the second after the first was
        // inserted, and the savepoint takes the first back out.
        var mixed = await Assert.ThrowsAsync<ConcurrencyException>(() => store.AppendAsync("order-1", ExpectedVersion.Any, [NewEvent(), stored[1]]).AsTask());
        Assert.Contains(stored[1].MessageId.ToString(), mixed.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<ConcurrencyException>(() => store.AppendAsync("order-1", ExpectedVersion.Exactly(1), [NewEvent()]).AsTask());

        Assert.Equal(before, Counts());
        Assert.Equal(3, (await store.AppendAsync("order-1", ExpectedVersion.Exactly(2), [NewEvent()])).StreamVersion);
    }

    [Fact]
    public async Task GroupedWrites_AConflictFailsOnlyItsOwnCaller()
    {
        await using var store = await SqliteEventStore.OpenAsync(_database.Path);
        await store.AppendAsync("order-taken", ExpectedVersion.NoStream, [NewEvent()]);
        var (transactionsBefore, _) = store.WriterStatistics;

        // Hold the write lock so every append below queues, then let them run as one group.
        var hold = await store.BeginOpenAppendAsync("order-held", ExpectedVersion.NoStream, [NewEvent()]);
        var good = Enumerable.Range(0, 20).Select(i => store.AppendAsync($"order-{i}", ExpectedVersion.NoStream, [NewEvent(), NewEvent()]).AsTask()).ToList();
        var conflicting = Enumerable.Range(0, 5).Select(_ => store.AppendAsync("order-taken", ExpectedVersion.NoStream, [NewEvent()]).AsTask()).ToList();
        var checkpoint = store.SetCheckpointAsync("grouped", 7).AsTask();
        await hold.RollbackAsync();

        var results = await Task.WhenAll(good);
        foreach (var conflict in conflicting)
        {
            await Assert.ThrowsAsync<ConcurrencyException>(() => conflict);
        }

        await checkpoint;
        Assert.All(results, r => Assert.Equal(2, r.StreamVersion));
        Assert.Equal(40, results.Select(r => r.LastPosition).Distinct().Count() * 2);
        Assert.Equal(1, await store.GetStreamVersionAsync("order-taken"));
        Assert.Equal(0, await store.GetStreamVersionAsync("order-held"));
        Assert.Equal(7, await store.GetCheckpointAsync("grouped"));
        Assert.Equal(41, (await ReadAll(store, 0)).Count);

        // One group may have left the queue before all were queued; the rest ran together.
        var (transactions, _) = store.WriterStatistics;
        Assert.InRange(transactions - transactionsBefore, 1, 2);
    }

    [Fact]
    public async Task GroupedWrites_ADiskFullUndoingTheTransaction_FailsEveryCallerWithTheCause()
    {
        await using var store = await SqliteEventStore.OpenAsync(_database.Path);
        await store.AppendAsync("order-0", ExpectedVersion.NoStream, [NewEvent()]);

        // The file may not grow past its size now: SQLite answers SQLITE_FULL and, for this write, ends the whole transaction.
        await SetMaxPageCount(store, (long)_database.Scalar("PRAGMA page_count")!);
        var big = Enumerable.Range(0, 200).Select(_ => NewEvent() with { Body = new byte[4000] }).ToArray();
        var hold = await store.BeginOpenAppendAsync("order-held", ExpectedVersion.NoStream, [NewEvent()]);
        var appends = Enumerable.Range(1, 5).Select(i => store.AppendAsync($"order-{i}", ExpectedVersion.NoStream, i == 3 ? big : [NewEvent()]).AsTask()).ToList();
        await hold.RollbackAsync();

        // The big append fails, and so does every append of its group, each with SQLITE_FULL (not the savepoint SQLite
        // dropped with the transaction). An append queued only after the hold ended makes a group of its own, which may fit.
        var stored = 1L;
        for (var i = 0; i < appends.Count; i++)
        {
            try
            {
                await appends[i];
                Assert.NotEqual(2, i);
                stored++;
            }
            catch (SqliteException failure)
            {
                Assert.Equal(13, failure.SqliteErrorCode);
            }
        }

        Assert.Equal(stored, _database.Scalar("SELECT COUNT(*) FROM herald_events"));
        await SetMaxPageCount(store, int.MaxValue);
        Assert.Equal(1, (await store.AppendAsync("order-after", ExpectedVersion.NoStream, [NewEvent()])).StreamVersion);

        static async Task SetMaxPageCount(SqliteEventStore store, long pages)
        {
            var unitOfWork = new Herald.Sqlite.Persistence.SqliteUnitOfWork(store);
            unitOfWork.EnlistSqliteWrite(connection =>
            {
                using var command = connection.CreateCommand();
                command.CommandText = $"PRAGMA max_page_count = {pages}";
                command.ExecuteNonQuery();
            });
            await unitOfWork.CommitAsync();
        }
    }

    [Fact]
    public async Task QueuedAppend_CancelledBeforeItRuns_ThrowsAndWritesNothing()
    {
        await using var store = await SqliteEventStore.OpenAsync(_database.Path);
        var hold = await store.BeginOpenAppendAsync("order-held", ExpectedVersion.NoStream, [NewEvent()]);
        using var cancellation = new CancellationTokenSource();
        var queued = store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()], cancellation.Token).AsTask();

        await cancellation.CancelAsync();
        await hold.CommitAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => queued.WaitAsync(Deadline));
        Assert.Equal(0, await store.GetStreamVersionAsync("order-1"));
        Assert.Equal(1, await store.GetStreamVersionAsync("order-held"));
    }

    [Fact]
    public async Task OpenAppend_BlocksOtherWritersUntilItEnds_AndReadersSeeOnlyItsCommit()
    {
        await using var store = await SqliteEventStore.OpenAsync(_database.Path);
        var hold = await store.BeginOpenAppendAsync("order-held", ExpectedVersion.NoStream, [NewEvent(), NewEvent()]);
        var blocked = store.AppendAsync("order-other", ExpectedVersion.NoStream, [NewEvent()]).AsTask();

        Assert.Equal(0, await store.GetLastPositionAsync());
        Assert.Empty(await ReadAll(store, 0));
        Assert.False(blocked.IsCompleted, "an append went through while another transaction held the write lock");

        await hold.CommitAsync();
        var after = await blocked.WaitAsync(Deadline);

        Assert.Equal(2, hold.Result.LastPosition);
        Assert.Equal(3, after.LastPosition);
        Assert.Equal(["order-held", "order-held", "order-other"], (await ReadAll(store, 0)).Select(e => e.Stream));
    }

    [Fact]
    public async Task ReadAll_PushesTheCategoryFilterIntoAnIndexedQuery()
    {
        await using (var store = await SqliteEventStore.OpenAsync(_database.Path))
        {
            await store.AppendAsync("order-1", ExpectedVersion.Any, [NewEvent()]);
        }

        Assert.Contains("herald_events_by_category", QueryPlan(SqliteEventStore.ReadAllSqlFor(category: true, eventTypes: false)), StringComparison.Ordinal);
        Assert.Contains("herald_events_by_category", QueryPlan(SqliteEventStore.ReadAllSqlFor(category: true, eventTypes: true)), StringComparison.Ordinal);
        Assert.Contains("INTEGER PRIMARY KEY", QueryPlan(SqliteEventStore.ReadAllSqlFor(category: false, eventTypes: false)), StringComparison.Ordinal);
        Assert.DoesNotContain("TEMP B-TREE", QueryPlan(SqliteEventStore.ReadAllSqlFor(category: true, eventTypes: true)), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(SqliteSynchronousMode.Full, 2L)]
    [InlineData(SqliteSynchronousMode.Normal, 1L)]
    public void WriterConnections_UseTheConfiguredDurabilityInWalMode(SqliteSynchronousMode mode, long pragmaValue)
    {
        var connections = new SqliteConnections(new SqliteStoreOptions { ConnectionString = _database.Path, Synchronous = mode });
        using var connection = connections.OpenCreating();
        using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA synchronous";
        Assert.Equal(pragmaValue, command.ExecuteScalar());
        command.CommandText = "PRAGMA foreign_keys";
        Assert.Equal(1L, command.ExecuteScalar());
    }

    [Theory]
    [InlineData("")]
    [InlineData(":memory:")]
    [InlineData("Data Source=x.db;Mode=ReadOnly")]
    [InlineData("Data Source=x.db;Nonsense=1")]
    public void Options_Invalid_AreRefusedWhenTheStoreIsCreated(string connectionString) =>
        Assert.Throws<OptionsValidationException>(() => new SqliteEventStore(new SqliteStoreOptions { ConnectionString = connectionString }));

    [Fact]
    public async Task Dispose_ClosesTheFileAndFailsWaitersAndLaterCalls()
    {
        var store = await SqliteEventStore.OpenAsync(_database.Path);
        await store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()]);
        var waiting = store.WaitForEventsAsync(1_000).AsTask();

        await store.DisposeAsync();
        await store.DisposeAsync();

        await Assert.ThrowsAsync<ObjectDisposedException>(() => waiting.WaitAsync(Deadline));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => store.AppendAsync("order-1", ExpectedVersion.Any, [NewEvent()]).AsTask());
        Assert.False(File.Exists(_database.Path + "-wal"), "the last connection to close checkpoints and removes the log, so none is left open");
    }

    [Fact]
    public async Task UseSqlite_RegistersOneStoreForTheThreePorts_AndOpensTheFileAtStart()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h.Configure(o => o.StartConsumer = false).UseSqlite(_database.Path, o => o.Synchronous = SqliteSynchronousMode.Normal));
        using (var host = builder.Build())
        {
            await host.StartAsync();

            Assert.Equal(SqliteSchema.CurrentVersion, _database.Scalar("SELECT MAX(version) FROM herald_schema"));
            var store = Assert.IsType<SqliteEventStore>(host.Services.GetRequiredService<IEventStore>());
            Assert.Same(store, host.Services.GetRequiredService<ICheckpointStore>());
            Assert.Same(store, host.Services.GetRequiredService<ISnapshotStore>());
            await store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()]);
            await host.StopAsync();
        }

        Assert.Equal(1L, _database.Scalar("SELECT COUNT(*) FROM herald_events"));
    }

    [Fact]
    public async Task UseSqlite_WithInvalidOptions_FailsTheHostStart()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h.Configure(o => o.StartConsumer = false).UseSqlite(_database.Path, o => o.MaxWritesPerTransaction = 0));
        using var host = builder.Build();

        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains("MaxWritesPerTransaction", error.Message, StringComparison.Ordinal);
    }

    private static readonly DateTimeOffset EventTime = new(2026, 3, 4, 5, 6, 7, TimeSpan.Zero);

    private static Envelope NewEvent() => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "order-happened",
        Time = EventTime,
        Body = Encoding.UTF8.GetBytes($"{{\"id\":\"{Guid.NewGuid()}\"}}"),
    };

    private static async Task<List<RecordedEvent>> ReadStream(IEventStore store, string stream)
    {
        var events = new List<RecordedEvent>();
        await foreach (var recorded in store.ReadStreamAsync(stream))
        {
            events.Add(recorded);
        }

        return events;
    }

    private static async Task<List<RecordedEvent>> ReadAll(IEventStore store, long after)
    {
        var events = new List<RecordedEvent>();
        await foreach (var recorded in store.ReadAllAsync(after))
        {
            events.Add(recorded);
        }

        return events;
    }

    private (object? Events, object? Streams, object? Deletions) Counts() => (
        _database.Scalar("SELECT COUNT(*) FROM herald_events"),
        _database.Scalar("SELECT COUNT(*) FROM herald_streams"),
        _database.Scalar("SELECT COUNT(*) FROM herald_stream_deletions"));

    private string QueryPlan(string sql)
    {
        using var connection = _database.OpenRaw();
        using var command = connection.CreateCommand();
        command.CommandText = "EXPLAIN QUERY PLAN " + sql;
        command.Parameters.AddWithValue("$p0", 0L);
        command.Parameters.AddWithValue("$p1", 100L);
        if (sql.Contains("$p2", StringComparison.Ordinal))
        {
            command.Parameters.AddWithValue("$p2", "order");
        }

        if (sql.Contains("$p3", StringComparison.Ordinal))
        {
            command.Parameters.AddWithValue("$p3", "[\"order-happened\"]");
        }

        using var reader = command.ExecuteReader();
        var plan = new StringBuilder();
        while (reader.Read())
        {
            plan.AppendLine(reader.GetString(3));
        }

        return plan.ToString();
    }
}
