using Microsoft.Extensions.Logging;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Transport;

/// <summary>
/// Settles one consumer channel's deliveries, coalescing acks: handled deliveries older than every delivery still running
/// (the leading run) go out as one <c>basic.ack multiple=true</c> once a batch of them has gathered, or after a short
/// delay (what the RabbitMQ documentation suggests for throughput; Spring AMQP's batch acks). Handled deliveries behind a
/// still-running one wait for it to finish, so worker lanes finishing slightly out of order still share multiple acks;
/// if the same delivery still holds them back one delay later, they are acked one by one, so a slow message never holds
/// the prefetch window for long. With batching on, every ack and nack goes out in order through one gate: a multiple ack
/// never passes a tag that was settled on its own (with it off there is no multiple ack, and no gate). Delivery tags
/// belong to one channel registration (a generation); a new one starts afresh.
/// </summary>
internal sealed class AckBatcher : IAsyncDisposable
{
    private IChannel _channel;
    private readonly int _batchSize;
    private readonly TimeSpan _maxDelay;
    private readonly ILogger _logger;
    private readonly string _queue;
    private readonly Lock _lock = new();
    private readonly SemaphoreSlim _send = new(1, 1);

    // Received on the current generation and neither handled nor settled: a multiple ack must stay below the oldest.
    private readonly DeliveryTagSet _running = new();

    // Handled, ack not yet sent.
    private readonly List<ulong> _pending = [];
    private readonly ITimer? _timer;
    private int _generation;
    private bool _timerArmed;

    // The running delivery that held handled ones back at the last timed flush (0: none); still there at the next, they go singly.
    private ulong _heldBackBy;

    public AckBatcher(IChannel channel, int batchSize, TimeSpan maxDelay, TimeProvider timeProvider, string queue, ILogger logger)
    {
        _channel = channel;
        _batchSize = Math.Max(1, batchSize);
        _maxDelay = maxDelay;
        _queue = queue;
        _logger = logger;
        if (_batchSize > 1)
        {
            _timer = timeProvider.CreateTimer(static state => ((AckBatcher)state!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        }
    }

    private enum Flush
    {
        /// <summary>A batch of the leading run is ready: only the leading run goes.</summary>
        Batch,

        /// <summary>The delay passed: the leading run goes, and acks held back by the same delivery as last time go singly.</summary>
        Timed,

        /// <summary>Everything waiting goes (the consumer stops).</summary>
        All,
    }

    /// <summary>Acks not yet sent (for tests and diagnostics).</summary>
    internal int PendingCount
    {
        get
        {
            lock (_lock)
            {
                return _pending.Count;
            }
        }
    }

    /// <summary>
    /// Starts a new registration of the consumer (after a recovery): the broker took back every unsettled delivery of
    /// the old channel, and their tags mean nothing on the new one, so none of them is ever settled.
    /// </summary>
    public void Reset(int generation)
    {
        lock (_lock)
        {
            ResetLocked(generation);
        }
    }

    /// <summary>Records a delivery as it arrives (in tag order, from the client's dispatch).</summary>
    /// <summary>Settles on a new channel from now on, for a new generation: the old channel's deliveries are never settled on it.</summary>
    public void UseChannel(IChannel channel, int generation)
    {
        lock (_lock)
        {
            _channel = channel;
            ResetLocked(generation);
        }
    }

    public void Received(ulong deliveryTag, int generation)
    {
        lock (_lock)
        {
            if (generation != _generation)
            {
                ResetLocked(generation);
            }

            _running.Add(deliveryTag);
        }
    }

    /// <summary>Acks a handled delivery: now when batching is off or a batch of the leading run is ready, else with a later flush.</summary>
    public ValueTask AckAsync(ulong deliveryTag, int generation, CancellationToken cancellationToken)
    {
        if (_batchSize == 1)
        {
            return SettleOneAsync(deliveryTag, generation, ack: true, requeue: false, cancellationToken);
        }

        var flush = false;
        lock (_lock)
        {
            if (generation != _generation || !_running.Remove(deliveryTag))
            {
                return ValueTask.CompletedTask;
            }

            _pending.Add(deliveryTag);
            if (_pending.Count >= _batchSize)
            {
                flush = LeadingRunLocked(out _) >= _batchSize;
            }

            if (!flush && !_timerArmed)
            {
                _timerArmed = true;
                _timer!.Change(_maxDelay, Timeout.InfiniteTimeSpan);
            }
        }

        return flush ? FlushAsync(Flush.Batch, cancellationToken) : ValueTask.CompletedTask;
    }

    /// <summary>Hands a delivery back to the queue (<c>basic.nack requeue=true</c>), at once.</summary>
    public ValueTask RequeueAsync(ulong deliveryTag, int generation, CancellationToken cancellationToken) =>
        SettleOneAsync(deliveryTag, generation, ack: false, requeue: true, cancellationToken);

    /// <summary>Sends every ack waiting: one multiple ack for the leading run, single acks for the rest.</summary>
    public ValueTask FlushAsync(CancellationToken cancellationToken = default) => FlushAsync(Flush.All, cancellationToken);

    public async ValueTask DisposeAsync()
    {
        if (_timer is not null)
        {
            await _timer.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async ValueTask FlushAsync(Flush mode, CancellationToken cancellationToken)
    {
        await _send.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ulong upTo;
            int run;
            ulong[]? singles = null;
            IChannel channel;
            lock (_lock)
            {
                if (mode != Flush.Batch)
                {
                    _timerArmed = false;
                }

                if (_pending.Count == 0)
                {
                    return;
                }

                // Taken with the tags: they are of the channel current now, and never settled on one that replaced it.
                channel = _channel;
                run = LeadingRunLocked(out upTo);
                var heldBack = _pending.Count - run;
                var oldestRunning = OldestRunningLocked();
                if (heldBack > 0 && (mode == Flush.All || (mode == Flush.Timed && oldestRunning == _heldBackBy)))
                {
                    // Held back for a whole delay by the same delivery (or stopping): they go now, one by one.
                    singles = new ulong[heldBack];
                    var i = 0;
                    foreach (var tag in _pending)
                    {
                        if (tag > oldestRunning)
                        {
                            singles[i++] = tag;
                        }
                    }

                    Array.Sort(singles);
                    _pending.Clear();
                    _heldBackBy = 0;
                }
                else
                {
                    // Deliveries below the oldest running one are all in the run; the rest keep waiting.
                    var kept = 0;
                    for (var i = 0; i < _pending.Count; i++)
                    {
                        if (_pending[i] > oldestRunning)
                        {
                            _pending[kept++] = _pending[i];
                        }
                    }

                    _pending.RemoveRange(kept, _pending.Count - kept);
                    if (heldBack > 0)
                    {
                        if (mode == Flush.Timed)
                        {
                            _heldBackBy = oldestRunning;
                        }

                        if (!_timerArmed)
                        {
                            _timerArmed = true;
                            _timer!.Change(_maxDelay, Timeout.InfiniteTimeSpan);
                        }
                    }
                }
            }

            if (run > 0)
            {
                await channel.BasicAckAsync(upTo, multiple: run > 1, cancellationToken).ConfigureAwait(false);
            }

            if (singles is not null)
            {
                foreach (var tag in singles)
                {
                    await channel.BasicAckAsync(tag, multiple: false, cancellationToken).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            _send.Release();
        }
    }

    private ulong OldestRunningLocked() => _running.Count > 0 ? _running.Min : ulong.MaxValue;

    /// <summary>
    /// How many waiting acks are older than every running delivery, and the newest of them: one multiple ack up to it
    /// settles exactly those (tags settled on their own are no longer unacked, so it passes over them harmlessly).
    /// </summary>
    private int LeadingRunLocked(out ulong upTo)
    {
        var oldestRunning = OldestRunningLocked();
        var run = 0;
        upTo = 0;
        foreach (var tag in _pending)
        {
            if (tag < oldestRunning)
            {
                run++;
                upTo = Math.Max(upTo, tag);
            }
        }

        return run;
    }

    private void ResetLocked(int generation)
    {
        _generation = generation;
        _running.Clear();
        _pending.Clear();
        _timerArmed = false;
        _heldBackBy = 0;
    }

    private ValueTask SettleOneAsync(ulong deliveryTag, int generation, bool ack, bool requeue, CancellationToken cancellationToken)
    {
        if (_batchSize > 1)
        {
            return SettleOneInOrderAsync(deliveryTag, generation, ack, requeue, cancellationToken);
        }

        // Without batching no multiple ack ever goes out, so single settles of distinct tags need no order among
        // themselves: no gate to wait on (and no continuation to schedule when two workers settle at once).
        IChannel channel;
        lock (_lock)
        {
            if (!TakeLocked(deliveryTag, generation))
            {
                return ValueTask.CompletedTask;
            }

            channel = _channel;
        }

        return Send(channel, deliveryTag, ack, requeue, cancellationToken);
    }

    private async ValueTask SettleOneInOrderAsync(ulong deliveryTag, int generation, bool ack, bool requeue, CancellationToken cancellationToken)
    {
        await _send.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            IChannel channel;
            lock (_lock)
            {
                if (!TakeLocked(deliveryTag, generation))
                {
                    return;
                }

                channel = _channel;
            }

            await Send(channel, deliveryTag, ack, requeue, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _send.Release();
        }
    }

    /// <summary>Takes a delivery of the current generation out of the running or waiting ones; false when it is not there (settled already).</summary>
    private bool TakeLocked(ulong deliveryTag, int generation) =>
        generation == _generation && (_running.Remove(deliveryTag) || _pending.Remove(deliveryTag));

    private static ValueTask Send(IChannel channel, ulong deliveryTag, bool ack, bool requeue, CancellationToken cancellationToken) => ack
        ? channel.BasicAckAsync(deliveryTag, multiple: false, cancellationToken)
        : channel.BasicNackAsync(deliveryTag, multiple: false, requeue, cancellationToken);

    private void OnTimer() => _ = FlushQuietlyAsync();

    private async Task FlushQuietlyAsync()
    {
        try
        {
            if (_channel.IsOpen)
            {
                await FlushAsync(Flush.Timed, CancellationToken.None).ConfigureAwait(false);
            }
            else
            {
                // The broker took the deliveries back with the channel; the next registration starts afresh.
                lock (_lock)
                {
                    _timerArmed = false;
                }
            }
        }
#pragma warning disable CA1031 // A timer flush has no caller; a lost channel's deliveries return to the queue anyway.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.AckFlushFailed(_logger, e, _queue);
        }
    }
}
