using System.Threading.Channels;

namespace Herald.Internal;

/// <summary>
/// Hands a consumer's deliveries to its workers: one bounded lane per worker. The same key (a partition key, a subject)
/// always goes to the same lane, so it is handled in order; others go to the lane used last while it is idle (fast
/// handlers finish in delivery order on one warm worker), else to an idle or the least loaded lane, so a slow message
/// holds up no other while any lane is free.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class DeliveryLanes<T>
{
    private readonly Channel<T>[] _lanes;

    // 1 while the lane's worker runs a handler; read when a lane is picked.
    private readonly int[] _busy;
    private int _lastLane;

    /// <summary>Creates <paramref name="concurrency"/> lanes sharing <paramref name="prefetch"/> slots; one writer feeds them.</summary>
    public DeliveryLanes(int concurrency, int prefetch)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(concurrency, 1);
        var capacity = Math.Max(1, prefetch / concurrency);
        _lanes = new Channel<T>[concurrency];
        _busy = new int[concurrency];
        for (var i = 0; i < concurrency; i++)
        {
            _lanes[i] = Channel.CreateBounded<T>(new BoundedChannelOptions(capacity)
            {
                FullMode = BoundedChannelFullMode.Wait,
                SingleReader = true,
                SingleWriter = true,
            });
        }
    }

    /// <summary>
    /// Puts an item in its lane, waiting while that lane is full. Once the workers were told to stop, throws
    /// <see cref="OperationCanceledException"/>: the item was not taken.
    /// </summary>
    public ValueTask WriteAsync(T item, string? key, CancellationToken cancellationToken)
    {
        var lane = Pick(key);
        return lane.Writer.TryWrite(item) ? ValueTask.CompletedTask : WriteSlowAsync(lane, item, cancellationToken);
    }

    /// <summary>
    /// Runs one worker per lane until <paramref name="stopping"/> fires: each takes its lane's items one at a time and
    /// awaits <paramref name="handle"/>. A worker finishes the item it runs; items still queued stay for <see cref="TakeLeftovers"/>.
    /// </summary>
    public Task RunAsync(Func<T, ValueTask> handle, CancellationToken stopping)
    {
        ArgumentNullException.ThrowIfNull(handle);

        // Workers wait without a token (a wait with one allocates and registers on the token every time a lane runs dry,
        // once per message when handlers are fast); stopping completes the lanes instead, which wakes them. Items still
        // queued stay readable for TakeLeftovers.
        _ = stopping.UnsafeRegister(static s => ((DeliveryLanes<T>)s!).Close(), this);
        return Task.WhenAll(Enumerable.Range(0, _lanes.Length).Select(lane => Task.Run(() => WorkAsync(lane, handle, stopping), CancellationToken.None)));
    }

    /// <summary>Takes every item no worker started (after the workers stopped), for the consumer to hand back.</summary>
    public List<T> TakeLeftovers()
    {
        var left = new List<T>();
        foreach (var lane in _lanes)
        {
            while (lane.Reader.TryRead(out var item))
            {
                left.Add(item);
            }
        }

        return left;
    }

    private Channel<T> Pick(string? key)
    {
        if (_lanes.Length == 1)
        {
            return _lanes[0];
        }

        if (key is not null)
        {
            return _lanes[(int)(StableHash(key) % (uint)_lanes.Length)];
        }

        var last = _lastLane;
        if (IsIdle(last))
        {
            return _lanes[last];
        }

        var best = last;
        var bestLoad = int.MaxValue;
        for (var i = 0; i < _lanes.Length; i++)
        {
            var lane = (last + i) % _lanes.Length;
            var load = _lanes[lane].Reader.Count + Volatile.Read(ref _busy[lane]);
            if (load == 0)
            {
                best = lane;
                break;
            }

            if (load < bestLoad)
            {
                best = lane;
                bestLoad = load;
            }
        }

        _lastLane = best;
        return _lanes[best];
    }

    private bool IsIdle(int lane) => Volatile.Read(ref _busy[lane]) == 0 && _lanes[lane].Reader.Count == 0;

    private void Close()
    {
        foreach (var lane in _lanes)
        {
            lane.Writer.TryComplete();
        }
    }

    private static async ValueTask WriteSlowAsync(Channel<T> lane, T item, CancellationToken cancellationToken)
    {
        try
        {
            await lane.Writer.WriteAsync(item, cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException e)
        {
            // Closed by the stop: the writer sees it as the cancellation it is.
            throw new OperationCanceledException("The consumer is stopping.", e, cancellationToken);
        }
    }

    private async Task WorkAsync(int lane, Func<T, ValueTask> handle, CancellationToken stopping)
    {
        var reader = _lanes[lane].Reader;
        try
        {
            while (!stopping.IsCancellationRequested && await reader.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false))
            {
                while (!stopping.IsCancellationRequested && reader.TryRead(out var item))
                {
                    Volatile.Write(ref _busy[lane], 1);
                    try
                    {
                        await handle(item).ConfigureAwait(false);
                    }
                    finally
                    {
                        Volatile.Write(ref _busy[lane], 0);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
        }
    }

    // FNV-1a over the key's UTF-16 units: the same key takes the same lane in every process and run (string.GetHashCode
    // is randomized per process), so which keys share a lane is reproducible.
    private static uint StableHash(string key)
    {
        var hash = 2166136261u;
        foreach (var c in key)
        {
            hash = (hash ^ c) * 16777619u;
        }

        return hash;
    }
}
