using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Postgres.EventSourcing;
using Herald.Conformance;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Npgsql;

namespace Herald.Postgres.Tests.EventSourcing;

/// <summary>ADR 0001: an open transaction that wrote anything holds readers back; once it ends, nothing was skipped.</summary>
public sealed class VisibilityHorizonTests(PostgresSchemaFixture fixture) : IClassFixture<PostgresSchemaFixture>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ForeignTransactionThatWrote_HoldsReadersBack_AndNothingIsSkippedWhenItEnds(bool commit)
    {
        await using var writer = await CreateStoreAsync();
        await using var reader = await CreateStoreAsync();
        var category = TestEvents.NewCategory();
        var head = await reader.GetLastPositionAsync();
        var seen = new List<RecordedEvent>();
        await using var subscription = await EventSubscription.StartNewAsync(reader, reader, (e, _) =>
        {
            lock (seen)
            {
                seen.Add(e);
            }

            return ValueTask.CompletedTask;
        }, new EventSubscriptionOptions { SubscriptionId = TestEvents.NewCategory(), StartAfterPosition = head, Filter = EventFilter.ForCategory(category) });

        // An unrelated unit of work writes and stays open; appends committed after it started sort above the horizon.
        await using var foreign = await BeginForeignWriteAsync();

        var first = await writer.AppendAsync(TestEvents.NewStream(category), ExpectedVersion.NoStream, TestEvents.Many(2));
        var second = await writer.AppendAsync(TestEvents.NewStream(category), ExpectedVersion.NoStream, TestEvents.Many(1));

        var heldHead = await reader.GetLastPositionAsync();
        Assert.True(heldHead < first.LastPosition - 1, $"the head {heldHead} moved past events held behind an open transaction");
        Assert.Empty(await TestEvents.ReadAllAsync(reader, head, EventFilter.ForCategory(category)));
        var waiting = reader.WaitForEventsAsync(heldHead).AsTask();
        Assert.Empty(await TestEvents.ReadAllAsync(reader, head, EventFilter.ForCategory(category)));
        Assert.False(waiting.IsCompleted);
        lock (seen)
        {
            Assert.Empty(seen);
        }

        // Ending it sends no notification (it appended nothing): the readers find out by re-checking the horizon.
        if (commit)
        {
            await foreign.Transaction.CommitAsync();
        }
        else
        {
            await foreign.Transaction.RollbackAsync();
        }

        await waiting.WaitAsync(Timeout);
        await subscription.WaitForPositionAsync(second.LastPosition).WaitAsync(Timeout);
        var all = await TestEvents.ReadAllAsync(reader, head, EventFilter.ForCategory(category));
        Assert.Equal(3, all.Count);
        Assert.Equal([first.LastPosition - 1, first.LastPosition, second.LastPosition], all.Select(e => e.Position));
        lock (seen)
        {
            Assert.Equal(all.Select(e => e.EventId), seen.Select(e => e.EventId));
        }
    }

    [Fact]
    public async Task AppendCommittedLate_SortsBeforeAppendsThatCommittedEarlier_AndIsNotSkipped()
    {
        await using var store = await CreateStoreAsync();
        await using var reader = await CreateStoreAsync();
        var category = TestEvents.NewCategory();
        var head = await reader.GetLastPositionAsync();

        var slowStream = TestEvents.NewStream(category);
        var fastStream = TestEvents.NewStream(category);
        await using var slow = await HeldAppend.BeginAsync(store, slowStream, ExpectedVersion.NoStream, TestEvents.Many(2));
        var fast = await store.AppendAsync(fastStream, ExpectedVersion.NoStream, TestEvents.Many(1));
        Assert.Empty(await TestEvents.ReadAllAsync(reader, head, EventFilter.ForCategory(category)));

        await slow.CommitAsync();

        // The transaction that started first sorts first, though it committed last.
        var all = await TestEvents.ReadAllUntilAsync(reader, head, EventFilter.ForCategory(category), 3);
        Assert.Equal([slowStream, slowStream, fastStream], all.Select(e => e.Stream));
        Assert.Equal(all[0].Position + 1, all[1].Position);
        Assert.Equal(fast.LastPosition, all[2].Position);
    }

    [Fact]
    public async Task ReadAll_OfAStoresOwnAppend_WaitsForAnOlderTransactionToEnd()
    {
        await using var store = await CreateStoreAsync();
        var category = TestEvents.NewCategory();
        var head = await store.GetLastPositionAsync();
        await using var held = await HeldAppend.BeginAsync(store, TestEvents.NewStream(category), ExpectedVersion.NoStream, TestEvents.Many(1));
        var mine = await store.AppendAsync(TestEvents.NewStream(category), ExpectedVersion.NoStream, TestEvents.Many(1));

        var reading = TestEvents.ReadAllAsync(store, head, EventFilter.ForCategory(category));
        await held.RollbackAsync();

        var all = await reading.WaitAsync(Timeout);
        Assert.Equal([mine.LastPosition], all.Select(e => e.Position));
        Assert.True(await store.GetLastPositionAsync() >= mine.LastPosition);
    }

    [Fact]
    public async Task AStoreOnAFakeClock_StillReadsItsOwnAppends_WhenAnOlderTransactionEndsWithoutANotification()
    {
        // UsePostgres takes the container's TimeProvider, a fake clock under Herald.Testing. The waits for the horizon (for the
        // store's own appends, for new events, for the listener to reconnect) ran on it, so a reader held back by a transaction
        // that ended without a notification woke only when something moved that clock: it hung for good.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var npgsqlLog = new TestOutputLogger(LogLevel.Debug);
        using var logging = LoggerFactory.Create(b => b.AddProvider(npgsqlLog).SetMinimumLevel(LogLevel.Debug));
        await using var dataSource = new NpgsqlDataSourceBuilder(PostgresTestDatabase.ConnectionString).UseLoggerFactory(logging).Build();
        await using var store = await PostgresEventStore.CreateAsync(
            dataSource, new PostgresStoreOptions { Schema = fixture.Schema, HorizonRecheckInterval = TimeSpan.FromMilliseconds(20), TimeProvider = clock });
        var category = TestEvents.NewCategory();
        var head = await store.GetLastPositionAsync();
        await using var foreign = await BeginForeignWriteAsync();

        // Nothing here starts the store's listener, whose (re)connect would wake the waits whatever their clock.
        var mine = await store.AppendAsync(TestEvents.NewStream(category), ExpectedVersion.NoStream, TestEvents.Many(1));
        var readOnce = npgsqlLog.WhenLoggedAsync("h.bound");
        var reading = TestEvents.ReadAllAsync(store, head, EventFilter.ForCategory(category));

        // The read found its append held back (so it waits) before the transaction ends.
        await readOnce.WaitAsync(Timeout);
        var last = store.GetLastPositionAsync().AsTask();
        await foreign.Transaction.RollbackAsync();

        Assert.Equal([mine.LastPosition], (await reading.WaitAsync(Timeout)).Select(e => e.Position));
        Assert.True(await last.WaitAsync(Timeout) >= mine.LastPosition);
    }

    [Fact]
    public async Task AReadWhoseWaitForItsOwnAppendsRunsOut_ReturnsWhatIsReadable_AndSaysSoInAWarning()
    {
        // Returning less than the store itself appended is documented, but silent it looks like lost events: the warning names
        // the positions and the cause.
        var log = new TestOutputLogger(LogLevel.Warning);
        using var logging = LoggerFactory.Create(b => b.AddProvider(log));
        await using var store = await PostgresEventStore.CreateAsync(fixture.DataSource, new PostgresStoreOptions
        {
            Schema = fixture.Schema,
            HorizonRecheckInterval = TimeSpan.FromMilliseconds(20),
            ReadOwnAppendsTimeout = TimeSpan.FromMilliseconds(200),
            LoggerFactory = logging,
        });
        await using var foreign = await BeginForeignWriteAsync();
        var mine = await store.AppendAsync(TestEvents.NewStream(), ExpectedVersion.NoStream, TestEvents.Many(1));
        var warned = log.WhenLoggedAsync($"appends up to position {mine.LastPosition} are still not readable");

        var head = await store.GetLastPositionAsync().AsTask().WaitAsync(Timeout);

        Assert.True(head < mine.LastPosition, $"the head {head} passed an append held back by an open transaction");
        await warned.WaitAsync(Timeout);
        Assert.Contains($"up to position {head}.", log.ToString(), StringComparison.Ordinal);
        Assert.Contains("idle in transaction", log.ToString(), StringComparison.Ordinal);
    }

    // An unrelated unit of work that wrote and stays open: it holds the horizon back, and ends without a notification.
    private async Task<ForeignWrite> BeginForeignWriteAsync()
    {
        await PostgresTestDatabase.ExecuteAsync($"CREATE TABLE IF NOT EXISTS \"{fixture.Schema}\".unrelated (value int)");
        var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        var transaction = await connection.BeginTransactionAsync();
        await using var insert = new NpgsqlCommand($"INSERT INTO \"{fixture.Schema}\".unrelated VALUES (1)", connection, transaction);
        await insert.ExecuteNonQueryAsync();
        return new ForeignWrite(connection, transaction);
    }

    private Task<PostgresEventStore> CreateStoreAsync() =>
        PostgresEventStore.CreateAsync(fixture.DataSource, new PostgresStoreOptions { Schema = fixture.Schema, HorizonRecheckInterval = TimeSpan.FromMilliseconds(20) });

    private sealed class ForeignWrite(NpgsqlConnection connection, NpgsqlTransaction transaction) : IAsyncDisposable
    {
        public NpgsqlTransaction Transaction => transaction;

        public async ValueTask DisposeAsync()
        {
            await transaction.DisposeAsync();
            await connection.DisposeAsync();
        }
    }
}
