using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using Herald.Internal;
using Herald.Messages;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Transport.InMemory;

/// <summary>
/// Runs <see cref="ConsumerOptions.MaxConcurrency"/> workers over one queue. With one worker it reads the queue
/// directly. With more, a pump prefetches into one bounded lane per worker: messages with a partition key always go
/// to the same lane (so they are handled in order), the others to the emptiest lane.
/// </summary>
internal sealed class InMemoryConsumer : ITransportConsumer, IConsumerCompletion
{
    private readonly InMemoryQueue _queue;
    private readonly DeliveryHandler _handler;
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _aborting = new();
    private readonly Channel<Envelope>[] _lanes;

    // The delivery each worker is handling, so a stop that abandons a handler can hand its message back.
    private readonly InMemoryDelivery?[] _handling;

    // What a stop hands back, kept until the stop returns it all at once in the order it was read: each worker's message
    // its cancelled handler left, and the pump's last read, which no lane had room for. Once returned (_handedBack), a
    // late one goes back on its own.
    private readonly Envelope?[] _cancelled;
    private readonly Lock _handBackGate = new();
    private Envelope? _pumpHeld;
    private bool _handedBack;
    private readonly Task _running;
    private readonly bool _reusesDeliveries;
    private int _stopped;
    private int _disposing;
    private volatile bool _disposed;

    public InMemoryConsumer(InMemoryQueue queue, ConsumerOptions options, DeliveryHandler handler)
    {
        _queue = queue;
        _handler = handler;
        _reusesDeliveries = handler.Target is IForgetsDeliveries;
        if (options.MaxConcurrency == 1)
        {
            _lanes = [];
            _handling = new InMemoryDelivery?[1];
            _cancelled = new Envelope?[1];
            _running = Task.Run(() => WorkAsync(queue.Reader, 0));
            Completion = ConsumerCompletion.WhenEndedAsync(_running, _stopping.Token);
        }
        else
        {
            var laneCapacity = Math.Max(1, options.Prefetch / options.MaxConcurrency);
            _lanes = new Channel<Envelope>[options.MaxConcurrency];
            _handling = new InMemoryDelivery?[options.MaxConcurrency];
            _cancelled = new Envelope?[options.MaxConcurrency];
            var tasks = new Task[options.MaxConcurrency + 1];
            for (var i = 0; i < _lanes.Length; i++)
            {
                _lanes[i] = Channel.CreateBounded<Envelope>(new BoundedChannelOptions(laneCapacity)
                {
                    FullMode = BoundedChannelFullMode.Wait,
                    SingleReader = true,
                    SingleWriter = true,
                });
                var lane = _lanes[i].Reader;
                var worker = i;
                tasks[i] = Task.Run(() => WorkAsync(lane, worker));
            }

            tasks[^1] = Task.Run(PumpAsync);
            _running = Task.WhenAll(tasks);

            // Any loop that ends on its own: a worker's end leaves its lane unread while the others go on.
            Completion = ConsumerCompletion.WhenEndedAsync(Task.WhenAny(tasks).Unwrap(), _stopping.Token);
        }
    }

    public Task Completion { get; }

    public string Queue => _queue.Name;

    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (_disposed)
        {
            // Disposing stopped it already; its token sources are gone.
            return;
        }

        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            await _stopping.CancelAsync().ConfigureAwait(false);
        }

        bool ended;
        try
        {
            ended = await ConsumerStop.WaitAsync(_running, _aborting, _queue.TimeProvider, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // The workers end by cancellation; what matters is that they ended.
            ended = true;
        }

        // Hand back, to the head of the queue in the order they were read, what was taken but not settled: each worker's
        // message, then those prefetched behind it into its lane, so another consumer takes them in send order.
        List<Envelope>? handBack = null;
        lock (_handBackGate)
        {
            for (var worker = 0; worker < _handling.Length; worker++)
            {
                if (_cancelled[worker] is { } cancelled)
                {
                    _cancelled[worker] = null;
                    (handBack ??= []).Add(cancelled);
                }
                else if (!ended && Volatile.Read(ref _handling[worker]) is { } delivery && delivery.TryTakeBack())
                {
                    // A handler that ignores its cancellation is left running; there is no broker to bring its message
                    // back, so it goes back here, and the handler's ack or nack when it ends does nothing.
                    (handBack ??= []).Add(delivery.Envelope);
                }

                if (worker < _lanes.Length)
                {
                    while (_lanes[worker].Reader.TryRead(out var envelope))
                    {
                        (handBack ??= []).Add(envelope);
                    }
                }
            }

            if (_pumpHeld is { } held)
            {
                _pumpHeld = null;
                (handBack ??= []).Add(held);
            }

            _handedBack = true;
            if (handBack is not null)
            {
                _queue.Return(CollectionsMarshal.AsSpan(handBack));
            }
        }
    }

    /// <summary>Keeps <paramref name="envelope"/> in <paramref name="slot"/> for the stop to hand back, or, once it has, hands it back now.</summary>
    private void HandBack(Envelope envelope, ref Envelope? slot)
    {
        lock (_handBackGate)
        {
            if (_handedBack)
            {
                _queue.Return([envelope]);
            }
            else
            {
                slot = envelope;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        // The transport disposes every consumer it started, including those the user disposed already.
        if (Interlocked.Exchange(ref _disposing, 1) != 0)
        {
            return;
        }

        await StopAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);
        _disposed = true;
        _stopping.Dispose();
        _aborting.Dispose();
    }

    private async Task PumpAsync()
    {
        var stop = _stopping.Token;
        var reader = _queue.Reader;
        var next = 0;
        try
        {
            while (await reader.WaitToReadAsync(stop).ConfigureAwait(false))
            {
                while (!stop.IsCancellationRequested && reader.TryRead(out var envelope))
                {
                    var lane = envelope.PartitionKey is { } key
                        ? _lanes[(int)((uint)StringComparer.Ordinal.GetHashCode(key) % (uint)_lanes.Length)]
                        : PickLane(ref next);
                    try
                    {
                        await lane.Writer.WriteAsync(envelope, stop).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        HandBack(envelope, ref _pumpHeld);
                        throw;
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        finally
        {
            foreach (var lane in _lanes)
            {
                lane.Writer.TryComplete();
            }
        }
    }

    private Channel<Envelope> PickLane(ref int next)
    {
        // Round-robin start, then the emptiest lane, so one slow message does not hold up the others. Each lane's count
        // is read once: reading it takes the channel's lock.
        var best = _lanes[next];
        var bestCount = best.Reader.Count;
        next = (next + 1) % _lanes.Length;
        for (var i = 0; i < _lanes.Length && bestCount > 0; i++)
        {
            var count = _lanes[i].Reader.Count;
            if (count < bestCount)
            {
                best = _lanes[i];
                bestCount = count;
            }
        }

        return best;
    }

    private async Task WorkAsync(ChannelReader<Envelope> reader, int worker)
    {
        var stop = _stopping.Token;
        var direct = _lanes.Length == 0;
        // A worker handles one delivery at a time; when the handler forgets each one once settled, one object serves them all.
        InMemoryDelivery? reusable = null;
        try
        {
            while (await reader.WaitToReadAsync(direct ? stop : CancellationToken.None).ConfigureAwait(false))
            {
                while (!stop.IsCancellationRequested && reader.TryRead(out var envelope))
                {
                    InMemoryDelivery delivery;
                    if (reusable is null)
                    {
                        delivery = new InMemoryDelivery(envelope, _queue);
                        reusable = _reusesDeliveries ? delivery : null;
                    }
                    else
                    {
                        reusable.Reuse(envelope);
                        delivery = reusable;
                    }

                    Volatile.Write(ref _handling[worker], delivery);
                    await HandleAsync(delivery, worker).ConfigureAwait(false);
                    Volatile.Write(ref _handling[worker], null);
                }

                if (stop.IsCancellationRequested)
                {
                    return;
                }
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
    }

    // Pooled: it goes asynchronous whenever the handler does.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask HandleAsync(InMemoryDelivery delivery, int worker)
    {
        var envelope = delivery.Envelope;
        if (!await DeliverySettlement.RunAsync(_handler, delivery, NullLogger.Instance, _aborting.Token).ConfigureAwait(false) && delivery.TryTakeBack())
        {
            // Aborted by shutdown: not a failed attempt, hand it back unchanged (unless the stop abandoned it and did).
            HandBack(envelope, ref _cancelled[worker]);
        }
    }
}
