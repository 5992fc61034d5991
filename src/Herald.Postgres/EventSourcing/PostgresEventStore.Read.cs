using System.Runtime.CompilerServices;
using Herald.EventSourcing;
using Herald.Internal;
using Herald.Postgres.Internal;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.EventSourcing;

internal sealed partial class PostgresEventStore
{
    /// <inheritdoc />
    public IAsyncEnumerable<RecordedEvent> ReadStreamAsync(string stream, ReadDirection direction = ReadDirection.Forward, long fromVersion = 1, int maxCount = int.MaxValue, CancellationToken cancellationToken = default) =>
        EventPages.ReadStreamAsync(stream, direction, fromVersion, maxCount, _options.ReadPageSize, (forward, from, limit, token) => ReadStreamPageAsync(stream, forward, from, limit, token), cancellationToken);

    /// <inheritdoc />
    public async IAsyncEnumerable<RecordedEvent> ReadAllAsync(
        long fromPositionExclusive = 0,
        EventFilter? filter = null,
        int maxCount = int.MaxValue,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ReadValidation.ValidateAllRead(fromPositionExclusive, maxCount);
        if (NulText.Holds(filter?.Category))
        {
            // No stream name holds U+0000, so no event is in such a category (and asking would fail with a bare 22021).
            yield break;
        }

        if (filter?.EventTypes is { } types && types.Any(NulText.Holds))
        {
            // No stored event type holds it either: those types match nothing, the others still match.
            filter = filter with { EventTypes = [.. types.Where(type => !NulText.Holds(type))] };
        }

        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        var own = _changes.LastPosition;
        var position = fromPositionExclusive;
        var remaining = maxCount;
        var pageLimit = _options.ReadPageSize;
        var limit = 0;
        DateTimeOffset? deadline = null;
        Task<(List<RecordedEvent> Page, long Bound)>? next = null;
        try
        {
            while (remaining > 0)
            {
                if (next is null)
                {
                    limit = Math.Min(pageLimit, remaining);
                }

                var fetching = next ?? ReadAllPageAsync(runtime, position, filter, limit, cancellationToken);
                next = null;
                var (page, bound) = await fetching.ConfigureAwait(false);
                if (page.Count > 0)
                {
                    position = page[^1].Position;
                    remaining -= page.Count;
                }

                // A full page, or one cut at the byte budget (the rows after its last event lie below the same bound, so the
                // next page, which starts after that event, reads them): fetch the next one while the caller works through
                // this one, asking for fewer events after a cut page.
                var more = !EventPages.EndsRead(page, limit);
                if (more && remaining > 0)
                {
                    pageLimit = EventPages.NextPageLimit(page, limit, _options.ReadPageSize);
                    limit = Math.Min(pageLimit, remaining);
                    next = ReadAllPageAsync(runtime, position, filter, limit, cancellationToken);
                }

                foreach (var recorded in page)
                {
                    yield return recorded;
                }

                if (more)
                {
                    continue;
                }

                // The readable end. If this store's own committed appends lie beyond it (an older transaction elsewhere holds
                // them back), wait a little for them, so a caller reads what it just wrote.
                if (own <= position || own < bound || !await WaitForOwnAppendsAsync(deadline ??= WakeClock.GetUtcNow() + _options.ReadOwnAppendsTimeout, own, position, cancellationToken).ConfigureAwait(false))
                {
                    yield break;
                }
            }
        }
        finally
        {
            if (next is not null)
            {
                // The caller stopped early: let the prefetch finish so its connection goes back to the pool.
                await next.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default).ConfigureAwait(false);
            }
        }
    }

    /// <inheritdoc />
    public async ValueTask<long> GetLastPositionAsync(CancellationToken cancellationToken = default)
    {
        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        var own = _changes.LastPosition;
        DateTimeOffset? deadline = null;
        while (true)
        {
            var head = await ReadHeadAsync(runtime, cancellationToken).ConfigureAwait(false);
            if (own < head.Bound || !await WaitForOwnAppendsAsync(deadline ??= WakeClock.GetUtcNow() + _options.ReadOwnAppendsTimeout, own, head.Last, cancellationToken).ConfigureAwait(false))
            {
                return head.Last;
            }
        }
    }

    /// <inheritdoc />
    public async ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken = default)
    {
        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        var listener = EnsureListening(runtime);
        while (true)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed), this);
            var wake = _changes.Next;
            var head = await ReadHeadAsync(runtime, cancellationToken).ConfigureAwait(false);
            if (head.Last > afterPosition)
            {
                return;
            }

            // Committed events waiting behind an older open transaction: that transaction may end without a notification
            // (a rollback, or a transaction that appended nothing), so re-check the horizon soon. So too while not listening.
            // Otherwise wait for a notification, re-checking rarely in case one was lost.
            var recheck = head.HeldBack || !listener.IsListening ? _options.HorizonRecheckInterval : _options.NotificationFallbackInterval;
            await Signal.WaitAsync(wake, recheck, WakeClock, cancellationToken).ConfigureAwait(false);
        }
    }

    // One wait step for the horizon to pass this store's own appends (up to own; readable is what the caller can read now):
    // false when the deadline has passed, which is logged, since the caller then returns less than this store appended.
    private async ValueTask<bool> WaitForOwnAppendsAsync(DateTimeOffset deadline, long own, long readable, CancellationToken cancellationToken)
    {
        var left = deadline - WakeClock.GetUtcNow();
        if (left <= TimeSpan.Zero)
        {
            if (_options.ReadOwnAppendsTimeout > TimeSpan.Zero)
            {
                Log.OwnAppendsHeldBack(_logger, own, _options.ReadOwnAppendsTimeout, readable);
            }

            return false;
        }

        var wake = _changes.Next;
        await Signal.WaitAsync(wake, left < _options.HorizonRecheckInterval ? left : _options.HorizonRecheckInterval, WakeClock, cancellationToken).ConfigureAwait(false);
        return true;
    }

    private async Task<Head> ReadHeadAsync(Runtime runtime, CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(runtime.Sql.Head, connection);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        return new Head(reader.GetInt64(0), reader.GetInt64(1), reader.GetBoolean(2));
    }

    private async Task<(List<RecordedEvent> Page, long Bound)> ReadAllPageAsync(Runtime runtime, long after, EventFilter? filter, int limit, CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var batch = PlannerGuard.Batch(connection, runtime.Sql.ReadAll(filter), ReadAllParameters(after, limit, filter));
        await using var reader = await PlannerGuard.ExecuteReaderAsync(batch, cancellationToken).ConfigureAwait(false);

        // The join gives one row even when no event matches (its event columns null), and every row the same bound.
        if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            return ([], 0);
        }

        var bound = reader.GetInt64(0);
        return (await EventRows.ReadPageAsync(reader, 1, limit, cancellationToken).ConfigureAwait(false), bound);
    }

    private async ValueTask<IReadOnlyList<RecordedEvent>> ReadStreamPageAsync(string stream, bool forward, long from, int limit, CancellationToken cancellationToken)
    {
        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var batch = PlannerGuard.Batch(connection, forward ? runtime.Sql.ReadStreamForward : runtime.Sql.ReadStreamBackward, ReadStreamParameters(stream, from, limit));
        await using var reader = await PlannerGuard.ExecuteReaderAsync(batch, cancellationToken).ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? await EventRows.ReadPageAsync(reader, 0, limit, cancellationToken).ConfigureAwait(false) : [];
    }

    /// <summary>The parameters of <see cref="EventStoreSql.ReadAll"/> for a page (the plan tests explain the same statement).</summary>
    internal static List<NpgsqlParameter> ReadAllParameters(long after, int limit, EventFilter? filter)
    {
        var parameters = new List<NpgsqlParameter>(4)
        {
            new NpgsqlParameter<long> { TypedValue = after, NpgsqlDbType = NpgsqlDbType.Bigint },
            new NpgsqlParameter<int> { TypedValue = limit, NpgsqlDbType = NpgsqlDbType.Integer },
        };
        if (filter?.Category is { } category)
        {
            parameters.Add(new NpgsqlParameter<string> { TypedValue = category, NpgsqlDbType = NpgsqlDbType.Text });
        }

        if (filter?.EventTypes is { } types)
        {
            parameters.Add(new NpgsqlParameter<string[]> { TypedValue = [.. types], NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        }

        return parameters;
    }

    /// <summary>The parameters of a stream page, forward or backward.</summary>
    internal static NpgsqlParameter[] ReadStreamParameters(string stream, long from, int limit) =>
    [
        new NpgsqlParameter<string> { TypedValue = stream, NpgsqlDbType = NpgsqlDbType.Text },
        new NpgsqlParameter<long> { TypedValue = from, NpgsqlDbType = NpgsqlDbType.Bigint },
        new NpgsqlParameter<int> { TypedValue = limit, NpgsqlDbType = NpgsqlDbType.Integer },
    ];

    /// <summary>The visibility bound, the highest readable position, and whether committed events wait above the bound.</summary>
    private readonly record struct Head(long Bound, long Last, bool HeldBack);
}
