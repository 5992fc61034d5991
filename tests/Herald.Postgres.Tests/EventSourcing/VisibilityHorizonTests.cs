using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Postgres.EventSourcing;
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
        await PostgresTestDatabase.ExecuteAsync($"CREATE TABLE IF NOT EXISTS \"{fixture.Schema}\".unrelated (value int)");
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
        await using var foreign = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await foreign.OpenAsync();
        await using var transaction = await foreign.BeginTransactionAsync();
        await using (var insert = new NpgsqlCommand($"INSERT INTO \"{fixture.Schema}\".unrelated VALUES (1)", foreign, transaction))
        {
            await insert.ExecuteNonQueryAsync();
        }

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
            await transaction.CommitAsync();
        }
        else
        {
            await transaction.RollbackAsync();
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

    private Task<PostgresEventStore> CreateStoreAsync() =>
        PostgresEventStore.CreateAsync(fixture.DataSource, new PostgresStoreOptions { Schema = fixture.Schema, HorizonRecheckInterval = TimeSpan.FromMilliseconds(20) });
}
