using Herald.EventSourcing;
using Herald.Internal;
using Herald.Messages;

namespace Herald.Tests.Internal;

/// <summary>
/// The paged reads the SQL event stores share (issue 9, one shared adapter layer): where each page starts, how large it is
/// asked to be, and when the read stops, over a fake store of numbered events that records every page asked for.
/// </summary>
public sealed class EventPagesTests
{
    [Fact]
    public async Task AForwardStreamRead_AsksPageAfterPage_EachFromTheLastEventRead_AndStopsAtTheShortOne()
    {
        var store = new PagedStream(10);

        var read = await Versions(EventPages.ReadStreamAsync("s-1", ReadDirection.Forward, 1, int.MaxValue, 3, store.ReadAsync, default));

        // Each page after the first starts at the last event of the one before, and asks for one more to make up for it.
        Assert.Equal(Enumerable.Range(1, 10).Select(v => (long)v), read);
        Assert.Equal([(true, 1L, 3), (true, 3L, 4), (true, 6L, 4), (true, 9L, 4)], store.Pages);
    }

    [Fact]
    public async Task AStreamWhoseLengthIsAMultipleOfThePage_EndsOnAPageOfOnlyTheLastEventRead()
    {
        var store = new PagedStream(6);

        var read = await Versions(EventPages.ReadStreamAsync("s-1", ReadDirection.Forward, 1, int.MaxValue, 3, store.ReadAsync, default));

        Assert.Equal(6, read.Count);
        Assert.Equal([(true, 1L, 3), (true, 3L, 4), (true, 6L, 4)], store.Pages);
    }

    [Theory]
    [InlineData(ReadDirection.Forward, false)]
    [InlineData(ReadDirection.Forward, true)]
    [InlineData(ReadDirection.Backward, false)]
    [InlineData(ReadDirection.Backward, true)]
    public async Task APageThatNoLongerStartsWithTheLastEventRead_EndsTheReadWithTheDeletion(ReadDirection direction, bool restarted)
    {
        // Versions 1..9 until the second page is asked for; then deleted, and perhaps started again at 10..12.
        var store = new PagedStream(9);
        var forward = direction == ReadDirection.Forward;
        var read = new List<long>();

        var ex = await Assert.ThrowsAsync<StreamDeletedDuringReadException>(async () =>
        {
            await foreach (var recorded in EventPages.ReadStreamAsync("s-1", direction, forward ? 1 : 9, int.MaxValue, 4, store.ReadAsync, default))
            {
                read.Add(recorded.Version);
                if (read.Count == 4)
                {
                    store.Delete(restartWith: restarted ? 3 : 0);
                }
            }
        });

        Assert.Equal(forward ? [1L, 2, 3, 4] : [9L, 8, 7, 6], read);
        Assert.Equal(("s-1", read[^1]), (ex.Stream, ex.Version));
        Assert.Contains("'s-1' was deleted while it was read", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task APageStartingWithAnotherEventAtTheSameVersion_EndsTheRead()
    {
        // A store whose events are told apart by id: the same version with another id is not the event read.
        var calls = 0;

        var ex = await Assert.ThrowsAsync<StreamDeletedDuringReadException>(() => Versions(EventPages.ReadStreamAsync(
            "s-1",
            ReadDirection.Forward,
            1,
            int.MaxValue,
            2,
            (_, from, limit, _) =>
            {
                calls++;
                IReadOnlyList<RecordedEvent> page = [.. Enumerable.Range((int)from, limit).Select(v => Event("s-1", v, v))];
                return ValueTask.FromResult(page);
            },
            default)));

        Assert.Equal((2, 2L), (calls, ex.Version));
    }

    [Fact]
    public async Task ABackwardStreamRead_EndsAtVersionOne_WithoutAskingBelowIt()
    {
        var store = new PagedStream(8);

        var read = await Versions(EventPages.ReadStreamAsync("s-1", ReadDirection.Backward, 8, int.MaxValue, 4, store.ReadAsync, default));

        Assert.Equal(Enumerable.Range(1, 8).Reverse().Select(v => (long)v), read);
        Assert.Equal([(false, 8L, 4), (false, 5L, 5)], store.Pages);
    }

    [Fact]
    public async Task MaxCount_CutsTheLastPageToWhatIsLeft()
    {
        var store = new PagedStream(100);

        var read = await Versions(EventPages.ReadStreamAsync("s-1", ReadDirection.Forward, 5, 7, 3, store.ReadAsync, default));

        Assert.Equal(Enumerable.Range(5, 7).Select(v => (long)v), read);
        Assert.Equal([(true, 5L, 3), (true, 7L, 4), (true, 10L, 2)], store.Pages);
    }

    [Fact]
    public async Task ReadingNothing_AsksForNoPage()
    {
        var store = new PagedStream(10);

        var read = await Versions(EventPages.ReadStreamAsync("s-1", ReadDirection.Forward, 1, 0, 3, store.ReadAsync, default));

        Assert.Empty(read);
        Assert.Empty(store.Pages);
    }

    [Fact]
    public async Task BadArguments_ThrowOnTheFirstMove_NotWhenTheReadIsMade()
    {
        var store = new PagedStream(10);

        var badStream = EventPages.ReadStreamAsync("", ReadDirection.Forward, 1, 10, 3, store.ReadAsync, default);
        var badVersion = EventPages.ReadStreamAsync("s-1", ReadDirection.Forward, 0, 10, 3, store.ReadAsync, default);
        var badPosition = EventPages.ReadAllAsync(-1, 10, 3, (_, _, _) => throw new InvalidOperationException("not asked"), default);

        await Assert.ThrowsAnyAsync<ArgumentException>(() => Versions(badStream));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => Versions(badVersion));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => Versions(badPosition));
        Assert.Empty(store.Pages);
    }

    [Fact]
    public async Task AnAllRead_StartsEachPageAfterThePositionOfThePreviousPagesLastEvent()
    {
        // Positions with gaps (filtered reads skip positions): the cursor is the last position read, not a count.
        long[] positions = [2, 3, 7, 11, 12, 20, 21];
        var asked = new List<(long After, int Limit)>();

        var read = await Positions(EventPages.ReadAllAsync(
            0,
            int.MaxValue,
            2,
            (after, limit, _) =>
            {
                asked.Add((after, limit));
                IReadOnlyList<RecordedEvent> page = [.. positions.Where(p => p > after).Take(limit).Select(p => Event("s-1", p, p))];
                return ValueTask.FromResult(page);
            },
            default));

        Assert.Equal(positions, read);
        Assert.Equal([(0L, 2), (3L, 2), (11L, 2), (20L, 2)], asked);
    }

    [Fact]
    public async Task APageTheStoreCutAtTheByteBudget_DoesNotEndTheRead_TheNextStartsAfterIt()
    {
        // Events of a third of the budget: the store's page stops at the third, well short of the limit of 10.
        var body = new byte[(EventPages.MaxPageBytes / 3) + 1];
        var asked = new List<long>();

        var read = await Positions(EventPages.ReadAllAsync(
            0,
            int.MaxValue,
            10,
            (after, limit, _) =>
            {
                asked.Add(after);
                var page = new List<RecordedEvent>();
                var bytes = 0L;
                for (var p = after + 1; p <= 7 && page.Count < limit; p++)
                {
                    if (EventPages.AddToPage(page, Event("s-1", p, p, body), ref bytes))
                    {
                        break;
                    }
                }

                return ValueTask.FromResult<IReadOnlyList<RecordedEvent>>(page);
            },
            default));

        // The first event's body does not count toward the budget: the page is cut at the fourth.
        Assert.Equal(Enumerable.Range(1, 7).Select(p => (long)p), read);
        Assert.Equal([0L, 4L], asked);
    }

    [Fact]
    public async Task AfterACutPage_TheNextAsksForAsManyEventsAsItHeld_AndFullPagesGrowBackToThePageSize()
    {
        // Four events of a third of the budget (the first's body does not count), then small ones. A server sends every row a query asks for, so after a cut
        // page the next one must not ask for the whole page size again.
        var large = new byte[(EventPages.MaxPageBytes / 3) + 1];
        var asked = new List<(long After, int Limit)>();

        var read = await Positions(EventPages.ReadAllAsync(
            0,
            int.MaxValue,
            10,
            (after, limit, _) =>
            {
                asked.Add((after, limit));
                var page = new List<RecordedEvent>();
                var bytes = 0L;
                for (var p = after + 1; p <= 20 && page.Count < limit; p++)
                {
                    if (EventPages.AddToPage(page, Event("s-1", p, p, p <= 4 ? large : null), ref bytes))
                    {
                        break;
                    }
                }

                return ValueTask.FromResult<IReadOnlyList<RecordedEvent>>(page);
            },
            default));

        Assert.Equal(Enumerable.Range(1, 20).Select(p => (long)p), read);
        Assert.Equal([(0L, 10), (4L, 4), (8L, 8), (16L, 10)], asked);
    }

    [Fact]
    public void APage_AlwaysTakesItsFirstEvent_HoweverLarge_AndCountsTheBodiesAfterItTowardTheBudget()
    {
        // A stream page's first event may be the last one of the page before, read again: were it to count, a page of it
        // alone would bring nothing new, and the read would ask for it forever.
        var page = new List<RecordedEvent>();
        var bytes = 0L;

        Assert.False(EventPages.AddToPage(page, Event("s-1", 1, 1, new byte[EventPages.MaxPageBytes * 2]), ref bytes));
        Assert.False(EventPages.AddToPage(page, Event("s-1", 2, 2, new byte[EventPages.MaxPageBytes - 1]), ref bytes));
        Assert.True(EventPages.AddToPage(page, Event("s-1", 3, 3, new byte[1]), ref bytes));

        Assert.Equal(3, page.Count);
        Assert.Equal(EventPages.MaxPageBytes, bytes);
    }

    [Fact]
    public async Task TheToken_ReachesEveryPage()
    {
        using var cancellation = new CancellationTokenSource();
        var tokens = new List<CancellationToken>();

        await Versions(EventPages.ReadStreamAsync(
            "s-1",
            ReadDirection.Forward,
            1,
            int.MaxValue,
            2,
            (_, from, limit, token) =>
            {
                tokens.Add(token);
                IReadOnlyList<RecordedEvent> page = [.. Enumerable.Range((int)from, limit).Where(v => v <= 3).Select(v => Event("s-1", v, v, Ids[v]))];
                return ValueTask.FromResult(page);
            },
            cancellation.Token));

        Assert.Equal(2, tokens.Count);
        Assert.All(tokens, t => Assert.Equal(cancellation.Token, t));
    }

    private static async Task<List<long>> Versions(IAsyncEnumerable<RecordedEvent> events) =>
        [.. (await ToListAsync(events)).Select(e => e.Version)];

    private static async Task<List<long>> Positions(IAsyncEnumerable<RecordedEvent> events) =>
        [.. (await ToListAsync(events)).Select(e => e.Position)];

    private static async Task<List<RecordedEvent>> ToListAsync(IAsyncEnumerable<RecordedEvent> events)
    {
        var list = new List<RecordedEvent>();
        await foreach (var recorded in events)
        {
            list.Add(recorded);
        }

        return list;
    }

    // One id per version, so a page that reads an event again gives it the id it had.
    private static readonly Guid[] Ids = [.. Enumerable.Range(0, 200).Select(_ => Guid.CreateVersion7())];

    private static RecordedEvent Event(string stream, long version, long position, byte[]? body = null) => Event(stream, version, position, Guid.CreateVersion7(), body);

    private static RecordedEvent Event(string stream, long version, long position, Guid id, byte[]? body = null) =>
        new(stream, version, position, DateTimeOffset.UnixEpoch, new Envelope { MessageId = id, MessageType = "t", Time = DateTimeOffset.UnixEpoch, Body = body ?? "{}"u8.ToArray() });

    // A stream of versions 1..length; every page asked for is recorded as (forward, from, limit). Delete hides every version
    // up to its last, as a soft delete does, and may start the stream again after it.
    private sealed class PagedStream(long length)
    {
        private long _deletedUpTo;

        public List<(bool Forward, long From, int Limit)> Pages { get; } = [];

        public void Delete(int restartWith)
        {
            _deletedUpTo = length;
            length += restartWith;
        }

        public ValueTask<IReadOnlyList<RecordedEvent>> ReadAsync(bool forward, long from, int limit, CancellationToken cancellationToken)
        {
            Pages.Add((forward, from, limit));
            var versions = forward
                ? Enumerable.Range(0, limit).Select(i => from + i).Where(v => v <= length)
                : Enumerable.Range(0, limit).Select(i => from - i).Where(v => v >= 1 && v <= length);
            IReadOnlyList<RecordedEvent> page = [.. versions.Where(v => v > _deletedUpTo).Select(v => Event("s-1", v, v, Ids[v]))];
            return ValueTask.FromResult(page);
        }
    }
}
