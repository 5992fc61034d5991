using Herald.EventSourcing;
using Herald.Messages;
using Herald.Postgres.EventSourcing;

namespace Herald.Postgres.Tests.EventSourcing;

/// <summary>
/// A read page holds at most a byte budget of bodies (<see cref="Herald.Internal.EventPages.MaxPageBytes"/>), not 8,000
/// events of any size: with large events a page of 8,000 held gigabytes. The classes of this assembly run one at a time,
/// so the live managed heap measured here is this test's.
/// </summary>
public sealed class PostgresReadPageTests
{
    private const int EventBytes = 1000 * 1024;
    private const int Events = 48;

    // Far below the 48 MB a whole page of these events holds, far above the few MB of a page (and of the next one, fetched
    // ahead by $all) under the byte budget.
    private const long MostLiveBytesWhileReading = 20L * 1024 * 1024;

    [Fact]
    public async Task ReadAll_OfLargeEvents_HoldsOnlyAPageOfBoundedBytes_AndReadsEveryEventInOrder()
    {
        await using var schema = new TemporarySchema();
        await using var store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = schema.Name });
        var category = TestEvents.NewCategory();
        var stream = TestEvents.NewStream(category);
        var (large, all) = await AppendLargeEventsAsync(store, stream);

        foreach (var filter in new[] { null, new EventFilter { Category = category, EventTypes = ["big-happened"] } })
        {
            var before = GC.GetTotalMemory(forceFullCollection: true);
            long? liveAtFirst = null;
            var positions = new List<long>();
            await foreach (var recorded in store.ReadAllAsync(0, filter))
            {
                liveAtFirst ??= GC.GetTotalMemory(forceFullCollection: true) - before;
                positions.Add(recorded.Position);
            }

            Assert.Equal(filter is null ? all : large, positions);
            Assert.True(liveAtFirst < MostLiveBytesWhileReading, $"The read (filter {filter?.Category ?? "none"}) held {liveAtFirst} bytes after its first event.");
        }
    }

    [Fact]
    public async Task ReadStream_OfLargeEvents_HoldsOnlyAPageOfBoundedBytes_InBothDirections()
    {
        await using var schema = new TemporarySchema();
        await using var store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = schema.Name });
        var stream = TestEvents.NewStream();
        await AppendLargeEventsAsync(store, stream);

        foreach (var direction in new[] { ReadDirection.Forward, ReadDirection.Backward })
        {
            var before = GC.GetTotalMemory(forceFullCollection: true);
            long? liveAtFirst = null;
            var versions = new List<long>();
            await foreach (var recorded in store.ReadStreamAsync(stream, direction, direction == ReadDirection.Forward ? 1 : long.MaxValue))
            {
                liveAtFirst ??= GC.GetTotalMemory(forceFullCollection: true) - before;
                versions.Add(recorded.Version);
            }

            var expected = Enumerable.Range(1, Events).Select(v => (long)v);
            Assert.Equal(direction == ReadDirection.Forward ? expected : expected.Reverse(), versions);
            Assert.True(liveAtFirst < MostLiveBytesWhileReading, $"The {direction} read held {liveAtFirst} bytes after its first event.");
        }
    }

    // The large events, each followed by a small one of another stream and type that a filtered read skips.
    private static async Task<(List<long> Large, List<long> All)> AppendLargeEventsAsync(PostgresEventStore store, string stream)
    {
        var large = new List<long>();
        var all = new List<long>();
        var other = TestEvents.NewStream();
        for (var i = 0; i < Events; i++)
        {
            var result = await store.AppendAsync(stream, ExpectedVersion.Any, [new Envelope
            {
                MessageId = Guid.CreateVersion7(),
                MessageType = "big-happened",
                Time = DateTimeOffset.UnixEpoch,
                Body = new byte[EventBytes],
            }]);
            large.Add(result.LastPosition);
            all.Add(result.LastPosition);
            all.Add((await store.AppendAsync(other, ExpectedVersion.Any, [TestEvents.New()])).LastPosition);
        }

        return (large, all);
    }
}
