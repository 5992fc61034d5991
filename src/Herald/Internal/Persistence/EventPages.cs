using System.Runtime.CompilerServices;
using Herald.EventSourcing;

namespace Herald.Internal;

/// <summary>
/// The reads of an event store that fetches a page of events per query and holds no connection between pages: the argument
/// checks, the page limits and the cursor from one page to the next, the same for every such store.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class EventPages
{
    /// <summary>
    /// The bodies one page holds (4 MiB): a store stops adding rows to a page once they reach it (see <see cref="AddToPage"/>),
    /// so large events cost memory by the page's bytes rather than by its count.
    /// </summary>
    public const int MaxPageBytes = 4 * 1024 * 1024;

    /// <summary>
    /// Adds an event a page query read; true once the bodies of the page's events after its first (summed in
    /// <paramref name="bytes"/>) reached <see cref="MaxPageBytes"/>, when the store stops reading rows. A page so cut is shorter
    /// than its limit but does not end the read. A page always holds its first event, however large, and the events after it
    /// up to the budget: a stream page's first event is the last one of the page before, read again (see
    /// <see cref="ReadStreamAsync"/>), so every page but a read's last brings at least one new event.
    /// </summary>
    public static bool AddToPage(List<RecordedEvent> page, RecordedEvent recorded, ref long bytes)
    {
        ArgumentNullException.ThrowIfNull(page);
        ArgumentNullException.ThrowIfNull(recorded);
        if (page.Count > 0)
        {
            bytes += recorded.Envelope.Body.Length;
        }

        page.Add(recorded);
        return bytes >= MaxPageBytes;
    }

    /// <summary>
    /// Reads a stream in pages of at most <paramref name="pageSize"/> events, checking the arguments when enumeration starts.
    /// <paramref name="readPage"/> gets whether the read is forward, the version to start at (inclusive) and the page's limit.
    /// Each page after the first starts at the last event of the page before, read again: a page that does not start with
    /// that same event (the stream was deleted between the two queries, and perhaps started again) ends the read with a
    /// <see cref="StreamDeletedDuringReadException"/>, so a read never joins a deleted stream's events to a restarted one's,
    /// nor ends early as though the stream were shorter.
    /// </summary>
    public static IAsyncEnumerable<RecordedEvent> ReadStreamAsync(
        string stream,
        ReadDirection direction,
        long fromVersion,
        int maxCount,
        int pageSize,
        Func<bool, long, int, CancellationToken, ValueTask<IReadOnlyList<RecordedEvent>>> readPage,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(readPage);
        var forward = direction == ReadDirection.Forward;
        return ReadPagesAsync(
            () => ReadValidation.ValidateStreamRead(stream, fromVersion, maxCount),
            fromVersion,
            maxCount,
            pageSize,
            (version, limit, token) => readPage(forward, version, limit, token),
            last => forward || last.Version > 1 ? last.Version : 0,
            stream,
            cancellationToken);
    }

    /// <summary>
    /// Reads the global log in pages of at most <paramref name="pageSize"/> events, checking the arguments when enumeration
    /// starts. <paramref name="readPage"/> gets the position to start after and the page's limit.
    /// </summary>
    public static IAsyncEnumerable<RecordedEvent> ReadAllAsync(
        long fromPositionExclusive,
        int maxCount,
        int pageSize,
        Func<long, int, CancellationToken, ValueTask<IReadOnlyList<RecordedEvent>>> readPage,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(readPage);
        return ReadPagesAsync(() => ReadValidation.ValidateAllRead(fromPositionExclusive, maxCount), fromPositionExclusive, maxCount, pageSize, readPage, last => last.Position, anchoredStream: null, cancellationToken);
    }

    // The arguments are checked on the first MoveNextAsync, as a store's own iterator would. Both reads stop after maxCount
    // events, at a page that ends the read (EndsRead), or when the cursor falls below 1 (a backward stream read that passed
    // version 1; positions never do). After a page cut at the byte budget the next asks for fewer events (NextPageLimit).
    // A stream read (anchoredStream set) starts each page after the first at the last event read (the cursor is that
    // event's version; 0 after version 1 backward) and asks for one event more: the page must start with that event, which
    // it skips. A page of only that event ends the read (EndsRead: it is shorter than its limit, and its first event's body
    // never counts toward the byte budget).
    private static async IAsyncEnumerable<RecordedEvent> ReadPagesAsync(
        Action validate,
        long cursor,
        int maxCount,
        int pageSize,
        Func<long, int, CancellationToken, ValueTask<IReadOnlyList<RecordedEvent>>> readPage,
        Func<RecordedEvent, long> nextCursor,
        string? anchoredStream,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        validate();
        var remaining = maxCount;
        var pageLimit = pageSize;
        RecordedEvent? anchor = null;
        while (remaining > 0)
        {
            var skip = anchor is null ? 0 : 1;
            var limit = (int)Math.Min((long)Math.Min(remaining, pageLimit) + skip, int.MaxValue);
            var page = await readPage(cursor, limit, cancellationToken).ConfigureAwait(false);
            if (anchor is not null && (page.Count == 0 || page[0].Version != anchor.Version || page[0].Envelope.MessageId != anchor.Envelope.MessageId))
            {
                throw new StreamDeletedDuringReadException(anchoredStream!, anchor.Version);
            }

            for (var i = skip; i < page.Count; i++)
            {
                yield return page[i];
            }

            remaining -= page.Count - skip;
            if (EndsRead(page, limit))
            {
                yield break;
            }

            pageLimit = NextPageLimit(page, limit, pageSize);
            cursor = nextCursor(page[^1]);
            if (cursor < 1)
            {
                yield break;
            }

            anchor = anchoredStream is null ? null : page[^1];
        }
    }

    /// <summary>
    /// Whether a page asked for with <paramref name="limit"/> ends the read: it is empty, or shorter than its limit without
    /// having been cut at the byte budget (see <see cref="AddToPage"/>). A page that ended by itself with that many bytes
    /// costs one more (empty) query.
    /// </summary>
    public static bool EndsRead(IReadOnlyList<RecordedEvent> page, int limit)
    {
        ArgumentNullException.ThrowIfNull(page);
        return page.Count == 0 || (page.Count < limit && !CutByBytes(page));
    }

    /// <summary>
    /// The limit to ask the page after <paramref name="page"/> for (a page that did not end the read, asked for with
    /// <paramref name="limit"/>), at most <paramref name="pageSize"/>. After a page cut at the byte budget, as many events as
    /// it held: a server sends the rows a query returns past the cut, which the store reads past and drops, so a read of large
    /// events asks for a few at a time rather than thousands. After a full page, twice its limit, so the pages grow back once
    /// the events are small again.
    /// </summary>
    public static int NextPageLimit(IReadOnlyList<RecordedEvent> page, int limit, int pageSize)
    {
        ArgumentNullException.ThrowIfNull(page);
        var next = CutByBytes(page) ? page.Count : limit > pageSize / 2 ? pageSize : limit * 2;
        return Math.Clamp(next, 1, pageSize);
    }

    // Whether the store stopped the page at the byte budget (see AddToPage: the first event's body does not count), rather
    // than at the end of what there is to read.
    private static bool CutByBytes(IReadOnlyList<RecordedEvent> page)
    {
        var bytes = 0L;
        for (var i = 1; i < page.Count; i++)
        {
            bytes += page[i].Envelope.Body.Length;
        }

        return bytes >= MaxPageBytes;
    }
}
