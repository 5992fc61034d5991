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
    private readonly Channel<QueuedEnvelope>[] _lanes;

    // The delivery each worker is handling, so a stop that abandons a handler can hand its message back.
    private readonly InMemoryDelivery?[] _handling;

    // The queue position of the message each worker handles, which its hand-back keeps.
    private readonly long[] _handlingPosition;

    // What a stop hands back, kept until the stop returns it all at once: each worker's message its cancelled handler left,
    // and the pump's last read, which no lane had room for. Once returned (_handedBack), a late one goes back on its own.
    private readonly QueuedEnvelope?[] _cancelled;
    private readonly Lock _handBackGate = new();
    private QueuedEnvelope? _pumpHeld;
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
            _handlingPosition = new long[1];
            _cancelled = new QueuedEnvelope?[1];
            _running = Task.Run(WorkDirectAsync);
            Completion = ConsumerCompletion.WhenEndedAsync(_running, _stopping.Token);
        }
        else
        {
            var laneCapacity = Math.Max(1, options.Prefetch / options.MaxConcurrency);
            _lanes = new Channel<QueuedEnvelope>[options.MaxConcurrency];
            _handling = new InMemoryDelivery?[options.MaxConcurrency];
            _handlingPosition = new long[options.MaxConcurrency];
            _cancelled = new QueuedEnvelope?[options.MaxConcurrency];
            var tasks = new Task[options.MaxConcurrency + 1];
            for (var i = 0; i < _lanes.Length; i++)
            {
                _lanes[i] = Channel.CreateBounded<QueuedEnvelope>(new BoundedChannelOptions(laneCapacity)
                {
                    FullMode = BoundedChannelFullMode.Wait,
                    SingleReader = true,
                    SingleWriter = true,
                });
                var lane = _lanes[i].Reader;
                var worker = i;
                tasks[i] = Task.Run(() => WorkLaneAsync(lane, worker));
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

        // Hand back what was taken but not settled: each worker's message, those prefetched into the lanes and the pump's
        // last read. Each keeps its queue position, and the queue puts it back at its place by that position (unkeyed
        // messages were spread over the lanes, and other consumers of the queue may have handed back theirs), so another
        // consumer takes them in send order.
        List<QueuedEnvelope>? handBack = null;
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
                    (handBack ??= []).Add(new QueuedEnvelope(delivery.Envelope, Volatile.Read(ref _handlingPosition[worker])));
                }

                if (worker < _lanes.Length)
                {
                    TakeAll(_lanes[worker].Reader, ref handBack);
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

    private static void TakeAll(ChannelReader<QueuedEnvelope> lane, ref List<QueuedEnvelope>? into)
    {
        while (lane.TryRead(out var prefetched))
        {
            (into ??= []).Add(prefetched);
        }
    }

    /// <summary>Keeps <paramref name="envelope"/> in <paramref name="slot"/> for the stop to hand back, or, once it has, hands it back now.</summary>
    private void HandBack(QueuedEnvelope envelope, ref QueuedEnvelope? slot)
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
                while (!stop.IsCancellationRequested && reader.TryReadQueued(out var queued))
                {
                    var lane = queued.Envelope.PartitionKey is { } key
                        ? _lanes[(int)((uint)StringComparer.Ordinal.GetHashCode(key) % (uint)_lanes.Length)]
                        : PickLane(ref next);
                    try
                    {
                        await lane.Writer.WriteAsync(queued, stop).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        HandBack(queued, ref _pumpHeld);
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

            HandBackWhatTheStopMissed();
        }
    }

    // A stop that gave up waiting for the pump (ConsumerStop's grace) emptied the lanes then; a write the pump was inside of
    // (past the lane's token check) when the stop's token fired lands in its lane after that, where no worker reads any
    // more, as the workers stop at the token. The pump's end hands it back, so it is never stranded with its permit.
    private void HandBackWhatTheStopMissed()
    {
        lock (_handBackGate)
        {
            if (!_handedBack)
            {
                // The stop has not handed back yet: it empties the lanes itself, now that the pump writes no more.
                return;
            }

            List<QueuedEnvelope>? left = null;
            foreach (var lane in _lanes)
            {
                TakeAll(lane.Reader, ref left);
            }

            if (left is not null)
            {
                _queue.Return(CollectionsMarshal.AsSpan(left));
            }
        }
    }

    private Channel<QueuedEnvelope> PickLane(ref int next)
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

    // The one worker of a consumer without lanes: it reads the queue itself.
    private async Task WorkDirectAsync()
    {
        var stop = _stopping.Token;
        var reader = _queue.Reader;
        InMemoryDelivery? reusable = null;
        try
        {
            while (await reader.WaitToReadAsync(stop).ConfigureAwait(false))
            {
                while (!stop.IsCancellationRequested && reader.TryReadQueued(out var queued))
                {
                    await HandleAsync(Deliver(queued, 0, ref reusable), 0).ConfigureAwait(false);
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

    // A worker of a lane: the pump completes the lane when it ends, and a stop leaves what is still in it for the hand-back.
    private async Task WorkLaneAsync(ChannelReader<QueuedEnvelope> lane, int worker)
    {
        var stop = _stopping.Token;
        InMemoryDelivery? reusable = null;
        while (await lane.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false))
        {
            while (!stop.IsCancellationRequested && lane.TryRead(out var prefetched))
            {
                await HandleAsync(Deliver(prefetched, worker, ref reusable), worker).ConfigureAwait(false);
            }

            if (stop.IsCancellationRequested)
            {
                return;
            }
        }
    }

    // A worker handles one delivery at a time; when the handler forgets each one once settled, one object serves them all.
    private InMemoryDelivery Deliver(QueuedEnvelope queued, int worker, ref InMemoryDelivery? reusable)
    {
        var envelope = queued.Envelope;
        Volatile.Write(ref _handlingPosition[worker], queued.Position);
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
        return delivery;
    }

    // Pooled: it goes asynchronous whenever the handler does.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask HandleAsync(InMemoryDelivery delivery, int worker)
    {
        var envelope = delivery.Envelope;
        if (!await DeliverySettlement.RunAsync(_handler, delivery, NullLogger.Instance, _aborting.Token).ConfigureAwait(false) && delivery.TryTakeBack())
        {
            // Aborted by shutdown: not a failed attempt, hand it back unchanged (unless the stop abandoned it and did).
            HandBack(new QueuedEnvelope(envelope, Volatile.Read(ref _handlingPosition[worker])), ref _cancelled[worker]);
        }

        Volatile.Write(ref _handling[worker], null);
    }
}
