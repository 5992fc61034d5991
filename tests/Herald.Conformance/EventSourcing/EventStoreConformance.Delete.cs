using Herald.EventSourcing;
using Xunit;

namespace Herald.Conformance.EventSourcing;

public abstract partial class EventStoreConformance
{
    [Fact]
    public async Task DeleteStream_HidesItsEventsAndVersionReadsZero()
    {
        var stream = NewStream();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(3));

        await Store.DeleteStreamAsync(stream, ExpectedVersion.Exactly(3));

        Assert.Empty(await ReadStreamAsync(stream));
        Assert.Empty(await ReadStreamAsync(stream, ReadDirection.Backward, long.MaxValue));
        Assert.Equal(0, await Store.GetStreamVersionAsync(stream));
        await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.StreamExists, NewEvents(1)).AsTask());
        await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.Exactly(3), NewEvents(1)).AsTask());
    }

    [Fact]
    public async Task DeleteStream_ThenAppendWithNoStream_ContinuesAfterTheLastVersion()
    {
        var stream = NewStream();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(3));
        await Store.DeleteStreamAsync(stream, ExpectedVersion.Any);

        var result = await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(2));
        var more = await Store.AppendAsync(stream, ExpectedVersion.Exactly(5), NewEvents(1));

        Assert.Equal(5, result.StreamVersion);
        Assert.Equal(6, more.StreamVersion);
        Assert.Equal([4L, 5L, 6L], (await ReadStreamAsync(stream)).Select(e => e.Version));
        Assert.Equal([6L, 5L, 4L], (await ReadStreamAsync(stream, ReadDirection.Backward, long.MaxValue)).Select(e => e.Version));
        Assert.Equal([5L, 6L], (await ReadStreamAsync(stream, fromVersion: 5)).Select(e => e.Version));
        Assert.Equal(6, await Store.GetStreamVersionAsync(stream));
    }

    [Fact]
    public async Task DeleteStream_ReadAllSkipsTheDeletedEvents()
    {
        var category = NewCategory();
        var head = await Store.GetLastPositionAsync();
        var deleted = NewStream(category);
        var kept = NewStream(category);
        await Store.AppendAsync(deleted, ExpectedVersion.NoStream, NewEvents(2));
        await Store.AppendAsync(kept, ExpectedVersion.NoStream, NewEvents(1));
        await Store.DeleteStreamAsync(deleted, ExpectedVersion.StreamExists);
        var revived = await Store.AppendAsync(deleted, ExpectedVersion.Any, NewEvents(1));

        var events = await ReadAllAsync(head, EventFilter.ForCategory(category));

        Assert.Equal([(kept, 1L), (deleted, 3L)], events.Select(e => (e.Stream, e.Version)));
        Assert.Equal(revived.LastPosition, events[^1].Position);
    }

    [Fact]
    public async Task DeleteStream_WithStaleExpectedVersion_ThrowsAndDeletesNothing()
    {
        var stream = NewStream();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(2));

        var ex = await AssertConflictAsync(() => Store.DeleteStreamAsync(stream, ExpectedVersion.Exactly(1)).AsTask());

        Assert.Equal(2, ex.Actual);
        Assert.Equal(2, (await ReadStreamAsync(stream)).Count);
        await AssertConflictAsync(() => Store.DeleteStreamAsync(NewStream(), ExpectedVersion.StreamExists).AsTask());
    }

    [Fact]
    public async Task DeleteStream_RetryOfAnAppendMadeBeforeTheDeletion_IsStillIdempotent()
    {
        var stream = NewStream();
        var events = NewEvents(2);
        var original = await Store.AppendAsync(stream, ExpectedVersion.NoStream, events);
        await Store.DeleteStreamAsync(stream, ExpectedVersion.Exactly(2));

        var retry = await Store.AppendAsync(stream, ExpectedVersion.NoStream, events);

        Assert.Equal(original, retry);
        Assert.Empty(await ReadStreamAsync(stream));
    }
}
