using Herald.EventSourcing;
using Herald.Postgres.EventSourcing;

namespace Herald.Postgres.Tests.EventSourcing;

/// <summary>ADR 0001: after a restore into a new cluster, raising the position offset keeps positions increasing.</summary>
public sealed class PositionOffsetTests
{
    [Fact]
    public async Task RaisingTheOffsetAboveTheHighestPosition_KeepsNewPositionsAboveEveryStoredOne()
    {
        await using var schema = new TemporarySchema();
        var options = new PostgresStoreOptions { Schema = schema.Name };
        var category = TestEvents.NewCategory();
        AppendResult before;
        await using (var store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options))
        {
            before = await store.AppendAsync(TestEvents.NewStream(category), ExpectedVersion.NoStream, TestEvents.Many(3));
        }

        // The documented restore step (docs/postgres.md), run with the writers stopped.
        await PostgresTestDatabase.ExecuteAsync(
            $"UPDATE \"{schema.Name}\".log_settings SET position_offset = (SELECT coalesce(max(position), 0) >> 20 FROM \"{schema.Name}\".events) + 1");

        await using var restarted = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options);
        var after = await restarted.AppendAsync(TestEvents.NewStream(category), ExpectedVersion.NoStream, TestEvents.Many(2));

        Assert.True(after.LastPosition - 1 > before.LastPosition + (1L << 20), $"{after.LastPosition} should lie far above {before.LastPosition}");
        var all = await TestEvents.ReadAllAsync(restarted, 0, EventFilter.ForCategory(category));
        Assert.Equal(5, all.Count);
        Assert.Equal(all.Select(e => e.Position).Order(), all.Select(e => e.Position));
        Assert.Equal([after.LastPosition - 1, after.LastPosition], (await TestEvents.ReadAllAsync(restarted, before.LastPosition, EventFilter.ForCategory(category))).Select(e => e.Position));
        Assert.True(await restarted.GetLastPositionAsync() >= after.LastPosition);
    }
}
