using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.CompilerServices;
using Herald.Diagnostics;
using Herald.Internal;
using Herald.Messages;
using Herald.Nats.Diagnostics;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using NATS.Client.Core;
using NATS.Client.JetStream;

namespace Herald.Nats.Transport;

/// <summary>
/// Consumes one queue through its durable pull consumer: a continuous pull of up to the prefetch, each message into a
/// lane (<see cref="DeliveryLanes{T}"/>: one partition key, or one subject where the queue orders by subject, always to
/// the same lane). Every message received and not settled is kept alive with <c>+WPI</c> while it waits or its handler
/// runs, and until its dead-letter copy is stored. Delayed sends wait in the queue's delay stream until due
/// (<see cref="NatsDelayMover"/>, run alongside), so the server's delivery count is the attempt; an early message in the queue's stream itself (a delayed publish to a bound
/// topic, or a delayed send of an earlier Herald) is handed to the delay stream. A message that cannot
/// be decoded goes to the pipeline all the same, carrying its DecodeFailure, and ends in the dead-letter store. On stop,
/// the pull drains and every message not handled is nakked (once the pull ended and the server dropped its requests:
/// <see cref="DropStalePullRequestsAsync"/>), so another consumer gets it without waiting for the ack wait; one on its last delivery is put back instead (<see cref="HandBackAsync"/>): in the queue's stream, or a
/// mapped queue's in its delay stream, whose mover hands it to this consumer's receive. Its
/// durable (or a delay line's) gone and the server refusing to make it again, or made again as a push consumer, ends
/// its pull, and <see cref="Completion"/> reports it.
/// </summary>
internal sealed class NatsConsumer : ITransportConsumer, ILagSource, IConsumerCompletion
{
    private readonly NatsTransport _transport;
    // Replaced when the pull finds the durable consumer gone and makes it again.
    private volatile INatsJSConsumer _consumer;
    private readonly NatsDelayMover[] _movers;
    private readonly QueueTarget _target;
    private readonly DeliveryHandler _handler;
    private readonly string? _rawType;
    private readonly ILogger _logger;
    private readonly int _prefetch;
    private readonly DeliveryLanes<NatsDelivery> _lanes;
    private readonly Func<NatsDelivery, Task> _sendProgress;

    // Every received, unsettled delivery, each in a slot of its own: the pull (the one task that receives) puts it in a free
    // slot, and settling empties the slot with a compare-exchange, so a message costs no lock, node or hash. There are
    // slots for as many as the consumer can hold at once (the lanes full, one running per worker, one waiting to be
    // written); should that ever fall short, the rest wait in _overflow (guarded by itself).
    private readonly NatsDelivery?[] _slots;
    private readonly HashSet<NatsDelivery> _overflow = [];
    private int _nextSlot;

    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _aborting = new();
    private Task _pulling = Task.CompletedTask;
    private Task _running = Task.CompletedTask;
    private ITimer? _keepAlive;
    private Thread? _keepAliveThread;
    // Set to stop the keep-alive thread (with _keepAliveStopped), or to have it take a new pace at once.
    private readonly ManualResetEventSlim _keepAliveWake = new();
    private volatile bool _keepAliveStopped;

    // Read again with the durable (each lag refresh, each remake): its ack wait may have changed on the server.
    private TimeSpan _keepAliveEvery;

    // A mapped queue's: the ack wait of its delay stream's durable, from which its consumer also receives the messages a stop
    // put back there (HandBackAsync), so it bounds the keep-alive's pace too; zero for a queue's own stream.
    private readonly TimeSpan _putBackAckWait;

    // A mapped queue's: held around each receive, as the delay mover receives the messages put back beside the pull, and the
    // lanes and the slots take one writer at a time; null for a queue's own stream, whose pull alone receives.
    private readonly SemaphoreSlim? _receiving;

    // A mapped queue's: the subject of its delay stream, on which its consumer receives the messages put back there.
    private readonly string? _putBackSubject;
    private ITimer? _lagRefresh;
    private long _pending;
    private long _ackPending;
    private long _delayed;

    // The stream sequence through which the durable had every message acked, as last read from the server (at the start
    // and at each lag refresh): where a mapped queue's durable made again resumes (NatsTransport.ResumeAfter).
    private ulong _ackedThrough;
    private volatile bool _hasLag;
    private readonly GaugeFreshness _lagFreshness;
    private int _stopped;

    // Set when a stop went on without handlers that ignored their cancellation: what they settle when they end is not sent
    // (another consumer may hold the message by then); the server delivers it again once its ack wait runs out.
    private volatile bool _abandoned;

    // Why the pull ended while no stop asked it to: the server refused to make the gone durable again.
    private volatile Exception? _ended;

    // What a stop's nak waits for (DropStalePullRequestsAsync): the pull ended, and the server dropped its requests.
    private readonly Lazy<Task> _stalePullsDropped;

    // Set when the pull's loop has ended (before the pull nakks what it held at the stop, which waits for it).
    private readonly TaskCompletionSource _pullEnded = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // What the pull held at the stop (the message it was handing to a full lane, those it drained after): nakked once it ended.
    private readonly ConcurrentQueue<INatsJSMsg<byte[]>> _heldAtStop = new();

    private NatsConsumer(NatsTransport transport, INatsJSConsumer consumer, NatsDelayLine[] delays, string queue, QueueTarget target, int concurrency, int prefetch, string? rawType, DeliveryHandler handler, ILogger logger)
    {
        _transport = transport;
        _consumer = consumer;
        Queue = queue;
        _target = target;
        _prefetch = prefetch;
        _rawType = rawType;
        _handler = handler;
        _logger = logger;
        _lagFreshness = new GaugeFreshness(transport.TimeProvider, transport.Options.LagRefreshInterval, logger, NatsMetricNames.ConsumerPending, queue);
        _lanes = new DeliveryLanes<NatsDelivery>(concurrency, prefetch);
        _sendProgress = KeepAliveAsync;
        _slots = new NatsDelivery?[Math.Max(prefetch, concurrency) + concurrency + 2];
        _stalePullsDropped = new Lazy<Task>(DropStalePullRequestsAsync);
        Tags =
        [
            new(MetricNames.DestinationTag, queue),
            new(NatsMetricNames.StreamTag, target.Stream),
            new(NatsMetricNames.ConsumerTag, consumer.Info.Name),
        ];

        // A mapped queue's messages a stop put back wait in its own delay stream (the first line), and its mover hands them
        // to this consumer's receive, with this consumer's stop (which comes before the mover's).
        Func<INatsJSMsg<byte[]>, CancellationToken, ValueTask>? receivePutBack = null;
        if (target.FilterSubject is not null)
        {
            _putBackAckWait = delays[0].Durable.Info.Config.AckWait;
            _putBackSubject = delays[0].DelaySubject;
            _receiving = new SemaphoreSlim(1, 1);
            receivePutBack = (message, _) => ReceiveAsync(message, _stopping.Token);
        }

        // Last: a mover may receive at once.
        _movers = new NatsDelayMover[delays.Length];
        for (var i = 0; i < delays.Length; i++)
        {
            _movers[i] = NatsDelayMover.Start(transport, delays[i], logger, i == 0 ? receivePutBack : null);
        }
    }

    public string Queue { get; }

    // Not while the server could not be read for a few refreshes: the last counts would read as a healthy flat line.
    public bool HasLag => _hasLag && _lagFreshness.IsFresh();

    public long Pending => Volatile.Read(ref _pending);

    public long AckPending => Volatile.Read(ref _ackPending);

    public long Delayed => Volatile.Read(ref _delayed);

    public KeyValuePair<string, object?>[] Tags { get; }

    public Task Completion { get; private set; } = Task.CompletedTask;

    /// <summary>Starts consuming the queue through <paramref name="consumer"/>, and moving due delayed messages from <paramref name="delays"/>.</summary>
    public static NatsConsumer Start(NatsTransport transport, INatsJSConsumer consumer, NatsDelayLine[] delays, string queue, QueueTarget target, int concurrency, int prefetch, string? rawType, DeliveryHandler handler, ILogger logger)
    {
        var started = new NatsConsumer(transport, consumer, delays, queue, target, concurrency, prefetch, rawType, handler, logger);
        started.ReadLag(consumer);
        var time = transport.TimeProvider;
        started.StartKeepAlive(time, transport.Options.KeepAliveFor(started.ShortestAckWait(consumer.Info.Config.AckWait)));
        var lag = transport.Options.LagRefreshInterval;
        started._lagRefresh = time.CreateTimer(static s => _ = ((NatsConsumer)s!).RefreshAsync(), started, lag, lag);
        started._running = started._lanes.RunAsync(started.HandleAsync, started._stopping.Token);
        started._pulling = Task.Run(started.PullAsync, CancellationToken.None);
        started.Completion = ConsumerCompletion.WhenEndedAsync(
            Task.WhenAny([started._pulling, started._running, .. Array.ConvertAll(started._movers, mover => mover.Pulling)]).Unwrap(),
            started._stopping.Token,
            started.WhyEnded);
        NatsConsumerLag.Track(started);
        return started;
    }

    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            await _stopping.CancelAsync().ConfigureAwait(false);
        }

        var workers = Task.WhenAll([_pulling, _running, .. Array.ConvertAll(_movers, mover => mover.StopAsync())]);
        if (!_abandoned && !await ConsumerStop.WaitAsync(workers, _aborting, _transport.TimeProvider, cancellationToken).ConfigureAwait(false))
        {
            _abandoned = true;
            AdapterLog.HandlersAbandoned(_logger, Queue, _lanes.WorkersLeft);
        }

        // Prefetched messages no handler started go back at once (not after the ack wait) to whoever consumes next.
        foreach (var delivery in _lanes.TakeLeftovers())
        {
            Untrack(delivery);
            await HandBackAsync(delivery.Message, delivery.Delivered, delivery.StreamSequence, inPull: false).ConfigureAwait(false);
        }

        _keepAliveStopped = true;
        _keepAliveWake.Set();
        if (_keepAlive is not null)
        {
            await _keepAlive.DisposeAsync().ConfigureAwait(false);
        }

        if (_lagRefresh is not null)
        {
            await _lagRefresh.DisposeAsync().ConfigureAwait(false);
        }

        NatsConsumerLag.Untrack(this);
        _transport.Forget(this);
        AdapterLog.ConsumerStopped(_logger, Queue);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);
        _keepAliveThread?.Join();
        _stopping.Dispose();
        _aborting.Dispose();
        _keepAliveWake.Dispose();
    }

    internal ValueTask AckAsync(NatsDelivery delivery, CancellationToken cancellationToken)
    {
        if (IsAbandoned(delivery))
        {
            return ValueTask.CompletedTask;
        }

        Forget(delivery);
        return delivery.Message.AckAsync(cancellationToken: cancellationToken);
    }

    /// <summary>
    /// The <c>MaxDeliver</c> of the durable consumer pulled from, as the server has it (null: no limit): whoever made it set
    /// it, maybe not to this process's option (logged then, 8014), and the server gives a message up by it, not by the option.
    /// </summary>
    internal int? MaxDeliver => _consumer.Info.Config.MaxDeliver is > 0 and var maxDeliver ? (int)Math.Min(maxDeliver, int.MaxValue) : null;

    /// <summary>Whether the <paramref name="delivered"/>-th delivery is the last one the durable consumer's <see cref="MaxDeliver"/> allows.</summary>
    internal bool IsLastDelivery(int delivered) => MaxDeliver is { } maxDeliver && delivered >= maxDeliver;

    internal async ValueTask NakAsync(NatsDelivery delivery, TimeSpan delay, CancellationToken cancellationToken)
    {
        if (IsAbandoned(delivery))
        {
            return;
        }

        // On the last delivery the server allows, a nak would leave the message in the stream, never delivered again. The
        // pipeline dead-letters such a failure itself (Delivery.IsLastDelivery); this covers a nak from anywhere else.
        if (delivery.IsLastDelivery && MaxDeliver is { } maxDeliver)
        {
            var reason = string.Create(CultureInfo.InvariantCulture, $"Delivered {delivery.Delivered} times, the most the consumer allows (MaxDeliver {maxDeliver}); it failed on the last.");
            await DeadLetterAsync(delivery, reason, headers: null, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
            return;
        }

        Forget(delivery);
        await delivery.ReleaseAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
        await delivery.Message.NakAsync(delay > TimeSpan.Zero ? new AckOpts { NakDelay = delay } : null, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Publishes a copy to the queue's dead-letter subject (stored before this returns), then acks the message; if the copy
    /// fails the message is handed back (nak, redelivered after <paramref name="handBackDelay"/>) and the failure thrown.
    /// </summary>
    internal async ValueTask DeadLetterAsync(
        NatsDelivery delivery, string reason, IReadOnlyDictionary<string, string>? headers, TimeSpan handBackDelay, CancellationToken cancellationToken)
    {
        if (IsAbandoned(delivery))
        {
            return;
        }

        // Kept alive until the copy is stored: its publish is retried for up to PublishRetryTimeout, which may outlast the
        // ack wait, and the server would deliver the message again meanwhile (handled twice, dead-lettered twice).
        delivery.StoringCopy();
        var message = delivery.Message;
        try
        {
            await _transport.PublishDeadLetterAsync(Queue, message, delivery.Envelope.DeliveryAttempt, reason, headers, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Forget(delivery);
            await delivery.ReleaseAsync().ConfigureAwait(false);
            await NakQuietlyAsync(message, handBackDelay).ConfigureAwait(false);
            throw;
        }

        Forget(delivery);
        await message.AckAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    private void Forget(NatsDelivery delivery) => Untrack(delivery);

    // True, and logged, for a delivery whose handler ended after the stop abandoned it: it is not settled.
    private bool IsAbandoned(NatsDelivery delivery)
    {
        if (!_abandoned)
        {
            return false;
        }

        Log.AbandonedNotSettled(_logger, delivery.Envelope.MessageId, Queue);
        return true;
    }

    private async Task PullAsync()
    {
        try
        {
            if (await NatsPull.RunAsync(_consumer, _prefetch, ReceiveAsync, e => Log.PullFailed(_logger, e, Queue), RemakeAsync, _transport.TimeProvider, _stopping.Token).ConfigureAwait(false) is { } refused)
            {
                _ended = NatsPull.Ended(_logger, refused, NatsNames.Durable(Queue), _target.Stream, Queue);
            }
        }
        finally
        {
            _pullEnded.TrySetResult();
        }

        // Ended: nothing more is held; nakked once the server dropped the ended pull's requests.
        while (_heldAtStop.TryDequeue(out var held))
        {
            await _stalePullsDropped.Value.ConfigureAwait(false);
            await NakQuietlyAsync(held, TimeSpan.Zero).ConfigureAwait(false);
        }

        // Stopped with nothing to nak, the ended pull's requests are dropped all the same: a handler's nak with a delay
        // before the stop (a retry), or an ack wait running out, would otherwise meet only them when it falls due, and NATS
        // 2.9 would rewind the durable as for a stop's nak (DropStalePullRequestsAsync). On a connection that is not open
        // the server dropped them with it.
        if (_ended is null && _transport.Connection.ConnectionState == NatsConnectionState.Open)
        {
            await _stalePullsDropped.Value.ConfigureAwait(false);
        }
    }

    private Exception? WhyEnded() => _ended ?? Array.Find(_movers, mover => mover.Fault is not null)?.Fault;

    private async Task<INatsJSConsumer> RemakeAsync(CancellationToken stop)
    {
        var durable = await _transport.RemakeDurableAsync(Queue, _consumer.Info.Created, Volatile.Read(ref _ackedThrough), stop).ConfigureAwait(false);
        _consumer = durable;

        // Its sequences may have started over with its stream: read again from the one made.
        Volatile.Write(ref _ackedThrough, 0);
        ReadLag(durable);
        Log.ConsumerRemade(_logger, durable.Info.Name, _target.Stream, Queue);
        return durable;
    }

    private ValueTask ReceiveAsync(INatsJSMsg<byte[]> message, CancellationToken stop) =>
        _receiving is null ? ReceiveOneAsync(message, stop) : ReceiveInTurnAsync(message, stop);

    // Not cancelled by the stop: a receive holding it ends at the stop (its write to the lanes throws), and the next hands back.
    private async ValueTask ReceiveInTurnAsync(INatsJSMsg<byte[]> message, CancellationToken stop)
    {
        await _receiving!.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            await ReceiveOneAsync(message, stop).ConfigureAwait(false);
        }
        finally
        {
            _receiving.Release();
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ReceiveOneAsync(INatsJSMsg<byte[]> message, CancellationToken stop)
    {
        NatsDelivery? delivery = null;
        Envelope? envelope = null;
        var attempt = 1;
        ulong sequence = 0;
        try
        {
            if (!NatsAckReply.TryParse(message.ReplyTo, out var reply) && message.Metadata is { } m)
            {
                reply = new NatsAckReply(m.NumDelivered, m.Sequence.Stream, m.NumPending, m.Timestamp);
            }

            // A mapped queue's message a stop put back, received from the queue's delay stream: its delivery count there, on top
            // of the attempts before, and its pending count is that stream's.
            var putBackSubject = PutBackSubjectOf(message);
            if (putBackSubject is null)
            {
                // Zero when the message came without metadata (never from a pull consumer): read as the first delivery, stored now.
                Volatile.Write(ref _pending, (long)Math.Min(reply.Pending, long.MaxValue));
            }

            sequence = reply.StreamSequence;
            // Delayed messages reach this consumer only when due, so every delivery is an attempt; so was each before a stop
            // put the message back in the stream (HandBackAsync).
            attempt = (int)Math.Clamp(reply.Delivered + (ulong)NatsEnvelopeCodec.AttemptsBefore(message.Headers), 1, int.MaxValue);
            if (stop.IsCancellationRequested)
            {
                await HandBackAsync(message, attempt, sequence, inPull: true).ConfigureAwait(false);
                return;
            }

            // One pass over the headers reads the envelope and the due time of a delayed send (decoded even when it is early:
            // rare, and cheaper than a second look-up on every message).
            envelope = NatsEnvelopeCodec.Decode(
                message.Headers, message.Data ?? [], attempt, reply.Delivered == 0 ? _transport.TimeProvider.GetUtcNow() : reply.Timestamp, _rawType, _transport.Options.Source, _transport.TimeProvider, out var failure, out var notBefore);

            // The clock is read only for a delayed send or a message without metadata, not for every message.
            if (notBefore is { } due && due - _transport.TimeProvider.GetUtcNow() is var early && early > NatsDelayMover.DueTolerance)
            {
                await DeferAsync(message, sequence, early).ConfigureAwait(false);
                return;
            }

            if (failure is not null)
            {
                AdapterLog.Undecodable(_logger, Queue, failure.Message);
            }

            var key = failure is null ? envelope.PartitionKey ?? (_target.OrderBySubject ? putBackSubject ?? message.Subject : null) : null;
            delivery = new NatsDelivery(this, message, envelope, failure, attempt, sequence);
            Track(delivery);
            await _lanes.WriteAsync(delivery, key, stop).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            if (delivery is not null)
            {
                Untrack(delivery);
            }

            await HandBackAsync(message, attempt, sequence, inPull: true).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Nothing the wire sends may stop the pull or leave a message unsettled.
        catch (Exception e)
#pragma warning restore CA1031
        {
            AdapterLog.ReceiveFailed(_logger, e, Queue);
            if (delivery is null)
            {
                // A delivery of its own (decoding never throws), so the keep-alive holds it while its copy is stored.
                envelope ??= NatsEnvelopeCodec.Decode(message.Headers, message.Data ?? [], attempt, default, _rawType, _transport.Options.Source, _transport.TimeProvider, out _);
                delivery = new NatsDelivery(this, message, envelope, e, attempt, 0);
                Track(delivery);
            }

            await DeadLetterUnreceivedAsync(delivery, e).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// An early message in the queue's stream: moved to the delay stream and acked, so the copy the mover brings back when
    /// it is due is delivered as a first attempt. A declared stream's (a mapped queue's) is nakked until due instead, that
    /// delivery counted: a copy back to its send subject would also reach every other queue whose filter takes that subject.
    /// (Only an earlier Herald stores a delayed message there: delayed publishes to a mapped topic wait in its delay stream.)
    /// </summary>
    private async ValueTask DeferAsync(INatsJSMsg<byte[]> message, ulong sequence, TimeSpan early)
    {
        // No filter: the queue's own stream (NatsTransport.CreateQueueAsync), which only this queue's consumer reads.
        if (_target.FilterSubject is null)
        {
            try
            {
                await _transport.HandOverToDelayStreamAsync(Queue, message, sequence, CancellationToken.None).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // Logged; deferred the old way.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Log.DelayHandOverFailed(_logger, e, Queue);
                await NakQuietlyAsync(message, early).ConfigureAwait(false);
                return;
            }

            try
            {
                await message.AckAsync(cancellationToken: CancellationToken.None).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // Delivered again after the ack wait, and handed over again: the delay stream's duplicate window drops the copy.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Log.NakFailed(_logger, e, Queue);
            }

            return;
        }

        await NakQuietlyAsync(message, early).ConfigureAwait(false);
    }

    /// <summary>
    /// A message that failed before reaching the pipeline goes to the dead-letter subject with the reason (drained into the
    /// store later) as a handler's dead letter does, kept alive until its copy is stored; if even that fails, back to the stream.
    /// </summary>
    private async ValueTask DeadLetterUnreceivedAsync(NatsDelivery delivery, Exception failure)
    {
        try
        {
            // Handed back a second later, not at once: a receive that fails every time must not spin.
            await DeadLetterAsync(delivery, $"Receiving it failed: {failure.GetType().Name}: {failure.Message}", null, TimeSpan.FromSeconds(1), CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Logged; handed back to the stream (or, the ack lost, delivered again after the ack wait).
        catch (Exception e)
#pragma warning restore CA1031
        {
            AdapterLog.UnreceivedDeadLetterFailed(_logger, e, Queue);
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask HandleAsync(NatsDelivery delivery)
    {
        // Aborted by shutdown (false): not a failed attempt; handed back unchanged.
        if (!await DeliverySettlement.RunAsync(_handler, delivery, _logger, _aborting.Token).ConfigureAwait(false) && !IsAbandoned(delivery))
        {
            await HandBackAsync(delivery.Message, delivery.Delivered, delivery.StreamSequence, inPull: false).ConfigureAwait(false);
        }

        Untrack(delivery);
    }

    // Called by one receive at a time (the pull's, or a mapped queue's under _receiving), so a slot it finds empty stays empty until it fills it.
    private void Track(NatsDelivery delivery)
    {
        var slots = _slots;
        for (var i = 0; i < slots.Length; i++)
        {
            var at = _nextSlot;
            _nextSlot = at + 1 == slots.Length ? 0 : at + 1;
            if (Volatile.Read(ref slots[at]) is null)
            {
                delivery.Slot = at;
                Volatile.Write(ref slots[at], delivery);
                return;
            }
        }

        lock (_overflow)
        {
            delivery.Slot = NatsDelivery.InOverflow;
            _overflow.Add(delivery);
        }
    }

    private void Untrack(NatsDelivery delivery)
    {
        var slot = delivery.Slot;
        if (slot >= 0)
        {
            // Settling empties it, and so does the end of its handling: the second finds it gone (or another delivery there,
            // which the compare-exchange leaves alone) without an interlocked operation.
            if (Volatile.Read(ref _slots[slot]) == delivery)
            {
                Interlocked.CompareExchange(ref _slots[slot], null, delivery);
            }
        }
        else if (slot == NatsDelivery.InOverflow)
        {
            lock (_overflow)
            {
                _overflow.Remove(delivery);
            }
        }
    }

    /// <summary>
    /// Hands back, at once, a message the stop took from its handler (aborted, or received and never started): not a failed
    /// attempt. On the last delivery <c>MaxDeliver</c> allows a nak would not do: the server counted that delivery, never
    /// delivers the message again, and its max-deliveries advisory dead-letters it, though no handler finished with it.
    /// A message of the queue's own stream is put back in it instead, as a new message carrying the attempts made before
    /// it (so the next consumer's first delivery of it is again the last attempt), and the original acked once the copy is
    /// stored. A mapped queue's goes to the queue's delay stream instead (a copy to its subject would also reach every other
    /// queue whose filter takes it), marked with the subject it had; the mover of that stream hands it to this consumer's
    /// receive, and a stop naks it there, which costs nothing (no <c>MaxDeliver</c> there).
    /// </summary>
    private async ValueTask HandBackAsync(INatsJSMsg<byte[]> message, int attempt, ulong sequence, bool inPull)
    {
        // One already put back in the delay stream is nakked there: no MaxDeliver, the nak costs nothing.
        if (sequence > 0 && IsLastDelivery(attempt) && PutBackSubjectOf(message) is null)
        {
            try
            {
                await _transport.PutBackAsync(Queue, _target, message, sequence, attempt - 1, CancellationToken.None).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // Logged; nakked as any other.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Log.PutBackFailed(_logger, e, Queue);
                await NakQuietlyAsync(message, TimeSpan.Zero).ConfigureAwait(false);
                return;
            }

            try
            {
                await message.AckAsync(cancellationToken: CancellationToken.None).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // The copy is stored: the original, delivered no more, reaches the dead letters through its advisory.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Log.PutBackAckFailed(_logger, e, Queue);
            }

            return;
        }

        // Nakked once the server dropped the ended pull's requests (NATS 2.9 would count the nak's redelivery and yet send the
        // message again as a first delivery): a handler's (aborted) or a leftover's here; one the pull held at the stop by the
        // pull once it ended (waiting here, it never would). One put back in the delay stream comes from its mover's pull, not
        // this durable's: nakked at once.
        if (!inPull)
        {
            await _stalePullsDropped.Value.ConfigureAwait(false);
        }
        else if (PutBackSubjectOf(message) is null)
        {
            _heldAtStop.Enqueue(message);
            return;
        }

        await NakQuietlyAsync(message, TimeSpan.Zero).ConfigureAwait(false);
    }

    /// <summary>
    /// Waits for the pull to end, then asks the server for the durable's info, which drops the pull requests whose inbox
    /// nobody listens to any more. A nak while only such a request waits went wrong on NATS 2.9: the server took the message
    /// for its redelivery (counting it), found no live request, and rewound the durable's next stream sequence as if the
    /// message had been new; the next consumer got it with a delivery count of 1 while the server counted on, so a stop's
    /// nak on the server's last delivery was taken for an earlier one, and the message was dead-lettered through its
    /// max-deliveries advisory though no handler ever failed on it.
    /// </summary>
    private async Task DropStalePullRequestsAsync()
    {
        await _pullEnded.Task.ConfigureAwait(false);
        try
        {
            await _consumer.RefreshAsync(CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Logged; nakked all the same.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.PullFailed(_logger, e, Queue);
        }
    }

    /// <summary>
    /// The subject a mapped queue's message had before a stop put it back in the queue's delay stream, for one received from
    /// there; null for any other (the header alone, on a message of the declared stream, does not make it one).
    /// </summary>
    private string? PutBackSubjectOf(INatsJSMsg<byte[]> message) =>
        _putBackSubject is not null && string.Equals(message.Subject, _putBackSubject, StringComparison.Ordinal) ? NatsEnvelopeCodec.PutBackSubject(message.Headers) : null;

    private async ValueTask NakQuietlyAsync(INatsJSMsg<byte[]> message, TimeSpan delay)
    {
        try
        {
            await message.NakAsync(delay > TimeSpan.Zero ? new AckOpts { NakDelay = delay } : null, CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // A message that cannot be handed back returns after the ack wait.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.NakFailed(_logger, e, Queue);
        }
    }

    /// <summary>
    /// Ticks the keep-alive. On the system clock a thread of its own does it, not a timer: a timer's callback waits for a
    /// thread-pool thread, and a pool starved by blocking handlers held it past a short ack wait (a message was delivered
    /// twice, JetStreamTests under full-suite load). Another clock (a test's) drives a timer of its own.
    /// </summary>
    private void StartKeepAlive(TimeProvider time, TimeSpan every)
    {
        _keepAliveEvery = every;
        if (time != TimeProvider.System)
        {
            _keepAlive = time.CreateTimer(static s => ((NatsConsumer)s!).KeepAlive(), this, every, every);
            return;
        }

        _keepAliveThread = new Thread(static s => ((NatsConsumer)s!).KeepAliveLoop())
        {
            IsBackground = true,
            Name = "Herald NATS keep-alive",
        };
        _keepAliveThread.Start(this);
    }

    private void KeepAliveLoop()
    {
        while (!_keepAliveStopped)
        {
            if (_keepAliveWake.Wait(_keepAliveEvery))
            {
                // Reset before the flag is read again: a stop sets the flag, then wakes.
                _keepAliveWake.Reset();
                if (_keepAliveStopped)
                {
                    return;
                }
            }

            KeepAlive();
        }
    }

    /// <summary>
    /// Keeps alive at the pace <paramref name="ackWait"/> (the durable's, as just read from the server) calls for: an ack
    /// wait shortened on the server (edited, or the durable made again by another process) would be outlived by a tick
    /// paced for the old one, and the server would deliver a message again while its handler runs. A faster pace starts
    /// with a tick now.
    /// </summary>
    private void PaceKeepAlive(TimeSpan ackWait)
    {
        var every = _transport.Options.KeepAliveFor(ShortestAckWait(ackWait));
        if (every == _keepAliveEvery)
        {
            return;
        }

        _keepAliveEvery = every;
        _keepAlive?.Change(TimeSpan.Zero, every);
        if (_keepAliveThread is not null)
        {
            _keepAliveWake.Set();
        }
    }

    // The durable's ack wait, or the delay stream durable's where a mapped queue also receives from there and it is shorter.
    private TimeSpan ShortestAckWait(TimeSpan durableAckWait) =>
        _putBackAckWait > TimeSpan.Zero && (durableAckWait <= TimeSpan.Zero || _putBackAckWait < durableAckWait) ? _putBackAckWait : durableAckWait;

    /// <summary>Tells the server every received, unsettled message is still being worked on, so its ack wait starts again.</summary>
    private void KeepAlive()
    {
        List<NatsDelivery>? due = null;
        for (var i = 0; i < _slots.Length; i++)
        {
            if (Volatile.Read(ref _slots[i]) is { IsKeptAlive: true } delivery)
            {
                (due ??= []).Add(delivery);
            }
        }

        lock (_overflow)
        {
            foreach (var delivery in _overflow)
            {
                if (delivery.IsKeptAlive)
                {
                    (due ??= []).Add(delivery);
                }
            }
        }

        if (due is null)
        {
            return;
        }

        foreach (var delivery in due)
        {
            delivery.KeepAlive(_sendProgress);
        }
    }

    private async Task KeepAliveAsync(NatsDelivery delivery)
    {
        try
        {
            await delivery.Message.AckProgressAsync(cancellationToken: CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Logged; the next tick tries again, and at worst the message is delivered once more.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.KeepAliveFailed(_logger, e, Queue);
        }
    }

    /// <summary>
    /// The lag refresh's tick: the gauges, and (the server read) the stream keeping the durable's max-deliveries advisories,
    /// made again if it was deleted behind this process's back: nothing else would notice, and each advisory meanwhile is lost.
    /// </summary>
    private async Task RefreshAsync()
    {
        if (!await RefreshLagAsync().ConfigureAwait(false))
        {
            return;
        }

        try
        {
            await _transport.EnsureMaxDeliveriesCaptureAsync(Queue, _target, _consumer, CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Logged; the next tick tries again.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.MaxDeliveriesStreamCheckFailed(_logger, e, Queue);
        }
    }

    // False when the server could not be read.
    private async Task<bool> RefreshLagAsync()
    {
        _lagFreshness.Refreshing();
        try
        {
            await _consumer.RefreshAsync(CancellationToken.None).ConfigureAwait(false);
            var delays = await _transport.JetStream.GetStreamAsync(_transport.Names.DelayStream(Queue), cancellationToken: CancellationToken.None).ConfigureAwait(false);
            Volatile.Write(ref _delayed, delays.Info.State.Messages);
            ReadLag(_consumer);
            return true;
        }
#pragma warning disable CA1031 // The gauge keeps its last reading until it goes stale; the next tick tries again.
        catch (Exception e)
#pragma warning restore CA1031
        {
            AdapterLog.GaugeReadFailed(_logger, e, Queue);
            return false;
        }
    }

    private void ReadLag(INatsJSConsumer consumer)
    {
        var info = consumer.Info;
        Volatile.Write(ref _pending, (long)Math.Min(info.NumPending, long.MaxValue));
        Volatile.Write(ref _ackPending, info.NumAckPending);

        // With nothing pending an ack, every message delivered was acked: a floor the server may not have moved yet (2.9
        // leaves it at 0 for a consumer made to start at a later sequence until one is acked in order).
        var acked = info.NumAckPending == 0 ? Math.Max(info.AckFloor.StreamSeq, info.Delivered.StreamSeq) : info.AckFloor.StreamSeq;
        if (acked > Volatile.Read(ref _ackedThrough))
        {
            Volatile.Write(ref _ackedThrough, acked);
        }

        _hasLag = true;
        _lagFreshness.Refreshed();
        PaceKeepAlive(info.Config.AckWait);
    }

    /// <summary>Reads the lag from the server now (tests; the gauges otherwise refresh on their timer).</summary>
    internal Task RefreshLagNowAsync() => RefreshLagAsync();
}
