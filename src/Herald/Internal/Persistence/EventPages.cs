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
    /// Reads a stream in pages of at most <paramref name="pageSize"/> events, checking the arguments when enumeration starts.
    /// <paramref name="readPage"/> gets whether the read is forward, the version to start at (inclusive) and the page's limit.
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
            last => forward ? last.Version + 1 : last.Version - 1,
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
        return ReadPagesAsync(() => ReadValidation.ValidateAllRead(fromPositionExclusive, maxCount), fromPositionExclusive, maxCount, pageSize, readPage, last => last.Position, cancellationToken);
    }

    // The arguments are checked on the first MoveNextAsync, as a store's own iterator would. Both reads stop after maxCount
    // events, at a short page, or when the cursor falls below 1 (a backward stream read that passed version 1; positions
    // never do).
    private static async IAsyncEnumerable<RecordedEvent> ReadPagesAsync(
        Action validate,
        long cursor,
        int maxCount,
        int pageSize,
        Func<long, int, CancellationToken, ValueTask<IReadOnlyList<RecordedEvent>>> readPage,
        Func<RecordedEvent, long> nextCursor,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        validate();
        var remaining = maxCount;
        while (remaining > 0)
        {
            var limit = Math.Min(remaining, pageSize);
            var page = await readPage(cursor, limit, cancellationToken).ConfigureAwait(false);
            foreach (var recorded in page)
            {
                yield return recorded;
            }

            remaining -= page.Count;
            if (page.Count < limit)
            {
                yield break;
            }

            cursor = nextCursor(page[^1]);
            if (cursor < 1)
            {
                yield break;
            }
        }
    }
}
