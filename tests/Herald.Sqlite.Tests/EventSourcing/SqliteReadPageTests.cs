using Herald.EventSourcing;
using Herald.Messages;
using Herald.Sqlite.EventSourcing;

namespace Herald.Sqlite.Tests.EventSourcing;

/// <summary>
/// A collection of its own, run alone: it measures the live managed heap, which tests running beside it would disturb.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class HeapMeasuringCollection
{
    public const string Name = "Measures the heap";
}

/// <summary>
/// A read page holds at most a byte budget of bodies, not 512 events of any size: with large events a page of 512 held
/// gigabytes (review of the SQLite store, item "page byte bound").
/// </summary>
[Collection(HeapMeasuringCollection.Name)]
public sealed class SqliteReadPageTests : IDisposable
{
    private const int EventBytes = 1000 * 1024;
    private const int Events = 48;

    // Far below the 48 MB a whole page of these events holds, far above the few MB of a page under the byte budget.
    private const long MostLiveBytesWhileReading = 20L * 1024 * 1024;

    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    [Fact]
    public async Task ReadAll_OfLargeEvents_HoldsOnlyAPageOfBoundedBytes_AndReadsEveryEventInOrder()
    {
        await using var store = await SqliteEventStore.OpenAsync(_database.Path);
        await AppendLargeEventsAsync(store);

        var before = GC.GetTotalMemory(forceFullCollection: true);
        long? liveAtFirst = null;
        var positions = new List<long>();
        await foreach (var recorded in store.ReadAllAsync())
        {
            liveAtFirst ??= GC.GetTotalMemory(forceFullCollection: true) - before;
            positions.Add(recorded.Position);
        }

        Assert.Equal(Enumerable.Range(1, Events).Select(p => (long)p), positions);
        Assert.True(liveAtFirst < MostLiveBytesWhileReading, $"The read held {liveAtFirst} bytes after its first event.");
    }

    [Fact]
    public async Task ReadStream_OfLargeEvents_HoldsOnlyAPageOfBoundedBytes_InBothDirections()
    {
        await using var store = await SqliteEventStore.OpenAsync(_database.Path);
        await AppendLargeEventsAsync(store);

        foreach (var direction in new[] { ReadDirection.Forward, ReadDirection.Backward })
        {
            var before = GC.GetTotalMemory(forceFullCollection: true);
            long? liveAtFirst = null;
            var versions = new List<long>();
            await foreach (var recorded in store.ReadStreamAsync("big-1", direction, direction == ReadDirection.Forward ? 1 : long.MaxValue))
            {
                liveAtFirst ??= GC.GetTotalMemory(forceFullCollection: true) - before;
                versions.Add(recorded.Version);
            }

            var expected = Enumerable.Range(1, Events).Select(v => (long)v);
            Assert.Equal(direction == ReadDirection.Forward ? expected : expected.Reverse(), versions);
            Assert.True(liveAtFirst < MostLiveBytesWhileReading, $"The {direction} read held {liveAtFirst} bytes after its first event.");
        }
    }

    private static async Task AppendLargeEventsAsync(SqliteEventStore store)
    {
        for (var i = 0; i < Events; i++)
        {
            await store.AppendAsync("big-1", ExpectedVersion.Any, [new Envelope
            {
                MessageId = Guid.CreateVersion7(),
                MessageType = "big-happened",
                Time = DateTimeOffset.UnixEpoch,
                Body = new byte[EventBytes],
            }]);
        }
    }
}
