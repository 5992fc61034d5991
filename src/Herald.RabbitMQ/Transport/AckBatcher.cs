using Microsoft.Extensions.Logging;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Transport;

/// <summary>
/// Settles one consumer channel's deliveries, coalescing acks: a handled delivery's ack waits until a batch is full or a
/// short delay passes, then the longest run of handled deliveries from the oldest unsettled one goes out as one
/// <c>basic.ack multiple=true</c> (what the RabbitMQ documentation suggests for throughput; Spring AMQP's batch acks).
/// Handled deliveries behind a still-running one are acked one by one at the same flush, so a slow message never holds
/// the prefetch window. Every ack and nack goes out in order through one gate: a multiple ack never passes a tag that
/// was settled on its own. Delivery tags belong to one channel registration (a generation); a new one starts afresh.
/// </summary>
internal sealed class AckBatcher : IAsyncDisposable
{
    private readonly IChannel _channel;
    private readonly int _batchSize;
    private readonly TimeSpan _maxDelay;
    private readonly ILogger _logger;
    private readonly string _queue;
    private readonly Lock _lock = new();
    private readonly SemaphoreSlim _send = new(1, 1);

    // Received on the current generation and not yet settled on the broker (acked, nacked); includes _pending.
    private readonly SortedSet<ulong> _unsettled = [];

    // Handled, ack not yet sent.
    private readonly List<ulong> _pending = [];
    private readonly ITimer? _timer;
    private int _generation;
    private bool _timerArmed;

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
    public void Received(ulong deliveryTag, int generation)
    {
        lock (_lock)
        {
            if (generation != _generation)
            {
                ResetLocked(generation);
            }

            _unsettled.Add(deliveryTag);
        }
    }

    /// <summary>Acks a handled delivery: now when batching is off or the batch is full, else with the next flush.</summary>
    public ValueTask AckAsync(ulong deliveryTag, int generation, CancellationToken cancellationToken)
    {
        if (_batchSize == 1)
        {
            return SettleOneAsync(deliveryTag, generation, ack: true, requeue: false, cancellationToken);
        }

        bool flush;
        lock (_lock)
        {
            if (generation != _generation || !_unsettled.Contains(deliveryTag))
            {
                return ValueTask.CompletedTask;
            }

            _pending.Add(deliveryTag);
            flush = _pending.Count >= _batchSize;
            if (!flush && !_timerArmed)
            {
                _timerArmed = true;
                _timer!.Change(_maxDelay, Timeout.InfiniteTimeSpan);
            }
        }

        return flush ? FlushAsync(cancellationToken) : ValueTask.CompletedTask;
    }

    /// <summary>Hands a delivery back to the queue (<c>basic.nack requeue=true</c>), at once.</summary>
    public ValueTask RequeueAsync(ulong deliveryTag, int generation, CancellationToken cancellationToken) =>
        SettleOneAsync(deliveryTag, generation, ack: false, requeue: true, cancellationToken);

    /// <summary>Sends every ack waiting: one multiple ack for the leading run, single acks for the rest.</summary>
    public async ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        await _send.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ulong upTo = 0;
            var run = 0;
            ulong[]? singles = null;
            lock (_lock)
            {
                _timerArmed = false;
                if (_pending.Count == 0)
                {
                    return;
                }

                _pending.Sort();
                foreach (var tag in _unsettled)
                {
                    if (run < _pending.Count && _pending[run] == tag)
                    {
                        upTo = tag;
                        run++;
                    }
                    else
                    {
                        break;
                    }
                }

                if (run < _pending.Count)
                {
                    singles = _pending.GetRange(run, _pending.Count - run).ToArray();
                }

                foreach (var tag in _pending)
                {
                    _unsettled.Remove(tag);
                }

                _pending.Clear();
            }

            if (run > 0)
            {
                await _channel.BasicAckAsync(upTo, multiple: run > 1, cancellationToken).ConfigureAwait(false);
            }

            if (singles is not null)
            {
                foreach (var tag in singles)
                {
                    await _channel.BasicAckAsync(tag, multiple: false, cancellationToken).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            _send.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_timer is not null)
        {
            await _timer.DisposeAsync().ConfigureAwait(false);
        }
    }

    private void ResetLocked(int generation)
    {
        _generation = generation;
        _unsettled.Clear();
        _pending.Clear();
        _timerArmed = false;
    }

    private async ValueTask SettleOneAsync(ulong deliveryTag, int generation, bool ack, bool requeue, CancellationToken cancellationToken)
    {
        await _send.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            lock (_lock)
            {
                if (generation != _generation || !_unsettled.Remove(deliveryTag))
                {
                    return;
                }

                _pending.Remove(deliveryTag);
            }

            if (ack)
            {
                await _channel.BasicAckAsync(deliveryTag, multiple: false, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await _channel.BasicNackAsync(deliveryTag, multiple: false, requeue, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            _send.Release();
        }
    }

    private void OnTimer() => _ = FlushQuietlyAsync();

    private async Task FlushQuietlyAsync()
    {
        try
        {
            if (_channel.IsOpen)
            {
                await FlushAsync(CancellationToken.None).ConfigureAwait(false);
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
