using Herald.EventSourcing;
using Herald.Internal;
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

    [Theory]
    [InlineData(ReadDirection.Forward, true)]
    [InlineData(ReadDirection.Forward, false)]
    [InlineData(ReadDirection.Backward, true)]
    [InlineData(ReadDirection.Backward, false)]
    public async Task DeleteStream_DuringAReadThatSpansPages_TheReadNeverJoinsOrCutsTheDeletedStream(ReadDirection direction, bool restarted)
    {
        // Events of about 1 MiB: a store that pages its reads holds at most EventPages.MaxPageBytes of them in a page after
        // its first, so this stream takes it several statements, and the deletion lands between two of them.
        var size = Math.Min(MaxEventBytes, 1024 * 1024) - 64;
        var count = (EventPages.MaxPageBytes / size) + 4;
        var stream = NewStream();
        var deleted = Enumerable.Range(0, count).Select(i => NewEvent(json: $"{{\"n\":{i},\"pad\":\"{new string('x', size - 30)}\"}}")).ToArray();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, deleted);

        var read = new List<RecordedEvent>();
        StreamDeletedDuringReadException? met = null;
        await using (var events = Store.ReadStreamAsync(stream, direction, direction == ReadDirection.Forward ? 1 : long.MaxValue).GetAsyncEnumerator())
        {
            try
            {
                Assert.True(await events.MoveNextAsync());
                read.Add(events.Current);
                await Store.DeleteStreamAsync(stream, ExpectedVersion.Exactly(count));
                if (restarted)
                {
                    await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(count));
                }

                while (await events.MoveNextAsync())
                {
                    read.Add(events.Current);
                }
            }
            catch (StreamDeletedDuringReadException ex)
            {
                met = ex;
            }
        }

        // Every event read is the deleted stream's, in its order: a restarted stream's events never follow them. And the read
        // either saw the whole deleted stream (a store that reads it at one moment) or says where it met the deletion; it
        // never ends early as though the stream were shorter.
        var expected = direction == ReadDirection.Forward ? deleted : deleted.Reverse().ToArray();
        Assert.Equal(expected.Take(read.Count).Select(e => e.MessageId), read.Select(e => e.Envelope.MessageId));
        if (met is null)
        {
            Assert.Equal(count, read.Count);
        }
        else
        {
            Assert.Equal(stream, met.Stream);
            Assert.Equal(read[^1].Version, met.Version);
            Assert.Contains(stream, met.Message, StringComparison.Ordinal);
        }
    }
}
