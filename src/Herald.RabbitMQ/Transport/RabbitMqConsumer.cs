using Herald.Internal;
using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Transport;

/// <summary>
/// Consumes one queue on its own channel (manual ack, prefetch as basic.qos). Deliveries arrive one at a time from the
/// client and go into one bounded lane per worker (DeliveryLanes): the same partition key always to the same lane (handled in order),
/// others to the lane used last while it is idle, else to an idle or the least loaded lane; one whose worker is idle
/// runs on the client's dispatch thread in that worker's turn, up to the handler's first await. A retry or dead letter is
/// published (and confirmed) before the delivery is acked. A delivery that cannot be decoded goes to the pipeline all
/// the same, carrying its DecodeFailure, and ends in the dead-letter store; nothing the wire sends can throw inside the
/// client's callback or leave a delivery unsettled.
/// </summary>
internal sealed class RabbitMqConsumer : ITransportConsumer, IConsumerCompletion
{
    private readonly RabbitMqTransport _transport;
    private readonly IConnection _connection;
    private readonly int _prefetch;
    private IChannel _channel;
    private readonly DeliveryHandler _handler;
    private readonly string? _rawType;
    private readonly ILogger _logger;
    private readonly DeliveryLanes<RabbitMqDelivery> _lanes;
    private readonly AckBatcher _acks;
    private readonly ConsumerTimeouts _timeouts;
    private readonly int? _maxDeliveries;
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _aborting = new();
    private readonly SemaphoreSlim _closeGate = new(1, 1);
    private readonly Lock _resumeGate = new();
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _running = Task.CompletedTask;
    private Task _resuming = Task.CompletedTask;
    private bool _resumeActive;
    private bool _resumeAgain;
    private string? _consumerTag;
    private int _generation;
    private int _stopped;
    private bool _closed;
    private volatile bool _abandoned;

    // How long a handled delivery's ack may wait for others to share one multiple ack.
    private static readonly TimeSpan AckBatchDelay = TimeSpan.FromMilliseconds(2);

    private RabbitMqConsumer(RabbitMqTransport transport, IConnection connection, IChannel channel, string queue, int concurrency, int prefetch, string? rawType, DeliveryHandler handler, ILogger logger)
    {
        _transport = transport;
        _connection = connection;
        _prefetch = prefetch;
        _channel = channel;
        Queue = queue;
        _rawType = rawType;
        _handler = handler;
        _logger = logger;
        // A quarter of the prefetch window at most waits for its ack, so the broker keeps the rest of the window full.
        var ackBatch = transport.Options.AckBatchSize ?? Math.Clamp(prefetch / 4, 1, 64);
        _acks = new AckBatcher(channel, Math.Min(ackBatch, prefetch), AckBatchDelay, transport.TimeProvider, queue, logger);
        _lanes = new DeliveryLanes<RabbitMqDelivery>(concurrency, prefetch, runInline: true);
        _timeouts = new ConsumerTimeouts(transport.TimeProvider, concurrency);

        // Only quorum queues count deliveries; on a classic queue an x-delivery-count header is a sender's, not the broker's.
        _maxDeliveries = transport.Options.QueueType == RabbitMqQueueType.Quorum ? transport.Options.MaxDeliveries : null;
        Watch(channel);
    }

    public string Queue { get; }

    // The channel consumed on now, for tests that make the broker close it.
    internal IChannel ChannelForTests => _channel;

    public static async Task<RabbitMqConsumer> StartAsync(
        RabbitMqTransport transport,
        IConnection connection,
        string queue,
        int concurrency,
        int prefetch,
        string? rawType,
        DeliveryHandler handler,
        ILogger logger,
        CancellationToken cancellationToken)
    {
        var channel = await OpenChannelAsync(connection, prefetch, cancellationToken).ConfigureAwait(false);
        var consumer = new RabbitMqConsumer(transport, connection, channel, queue, concurrency, prefetch, rawType, handler, logger);
        try
        {
            var basic = new Subscriber(channel, consumer);
            consumer._running = consumer._lanes.RunAsync(consumer.HandleAsync, consumer._stopping.Token);
            consumer._consumerTag = await channel.BasicConsumeAsync(queue, autoAck: false, basic, cancellationToken).ConfigureAwait(false);
            return consumer;
        }
        catch
        {
            await consumer.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static async Task<IChannel> OpenChannelAsync(IConnection connection, int prefetch, CancellationToken cancellationToken)
    {
        // One dispatch at a time from the client keeps the broker's order; concurrency comes from the lanes.
        var channel = await connection.CreateChannelAsync(new CreateChannelOptions(false, false, consumerDispatchConcurrency: 1), cancellationToken).ConfigureAwait(false);
        try
        {
            await channel.BasicQosAsync(0, (ushort)prefetch, false, cancellationToken).ConfigureAwait(false);
            return channel;
        }
        catch
        {
            await channel.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public Task Completion => _completion.Task;

    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            await _stopping.CancelAsync().ConfigureAwait(false);
            _completion.TrySetResult();
            Task resuming;
            lock (_resumeGate)
            {
                // Read under the gate: a resume requested from now on sees the stop and does not start.
                resuming = _resuming;
            }

            await resuming.ConfigureAwait(false);
            if (_consumerTag is { } tag && _channel.IsOpen)
            {
                try
                {
                    await _channel.BasicCancelAsync(tag, noWait: false, CancellationToken.None).ConfigureAwait(false);
                }
#pragma warning disable CA1031 // A consumer on a lost channel is already cancelled; stopping goes on.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    Log.ConsumerStopFailed(_logger, e, Queue);
                }
            }
        }

        if (!_abandoned && !await ConsumerStop.WaitAsync(_running, _aborting, _transport.TimeProvider, cancellationToken).ConfigureAwait(false))
        {
            // Left running: closing the channel below hands their deliveries back, and a settlement on a closed channel is
            // not sent (IsStale), so what they do when they end settles nothing.
            _abandoned = true;
            AdapterLog.HandlersAbandoned(_logger, Queue, _lanes.WorkersLeft);
        }

        // Handled deliveries are acked before the channel closes; else the broker would hand them out again.
        await FlushAcksAsync().ConfigureAwait(false);

        // Closing the channel returns every unacked delivery to the queue: prefetched ones never started, and any a
        // cancelled handler left unsettled.
        await CloseChannelAsync().ConfigureAwait(false);
        _transport.Forget(this);
        AdapterLog.ConsumerStopped(_logger, Queue);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);
        await _acks.DisposeAsync().ConfigureAwait(false);
        _stopping.Dispose();
        _aborting.Dispose();
    }

    internal ValueTask AckAsync(RabbitMqDelivery received, CancellationToken cancellationToken)
    {
        if (IsStale(received))
        {
            return ValueTask.CompletedTask;
        }

        if (received.DecodeFailure is not null)
        {
            // Dead-lettered by the pipeline: a message cut off by consumer_timeout too often is done with.
            _timeouts.Settled(received.Envelope.MessageId);
        }

        return _acks.AckAsync(received.DeliveryTag, received.Generation, cancellationToken);
    }

    internal async ValueTask RedeliverAsync(RabbitMqDelivery received, int attempts, TimeSpan delay, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken)
    {
        if (IsStale(received))
        {
            return;
        }

        try
        {
            // The copy carries the headers through the retry queue too: dead-lettering back from its TTL keeps them.
            var properties = AmqpEnvelopeCodec.CopyForRepublish(received.Properties, attempts, deadLetterReason: null, originQueue: null, headers);
            var target = Queue;
            if (delay > TimeSpan.Zero)
            {
                // The retry queue lets a message go at the shorter of its TTL and the message's own expiration, so a
                // sender's shorter expiration would bring it back early. Dead-lettering back drops the expiration anyway.
                properties.Expiration = null;
                target = await _transport.EnsureRetryQueueAsync(Queue, delay, cancellationToken).ConfigureAwait(false);
            }

            await _transport.RepublishAsync(target, properties, received.Envelope.Body, Describe(received), cancellationToken).ConfigureAwait(false);
            await _acks.AckAsync(received.DeliveryTag, received.Generation, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            // The retry copy was refused (its queue full with reject-publish, gone, or the broker out of reach): handed back
            // at once, the broker would redeliver it as fast as it can, to fail and be refused the same way.
            RequeueLater(received);
            throw;
        }
    }

    internal async ValueTask DeadLetterAsync(RabbitMqDelivery received, int attempts, string reason, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken)
    {
        if (IsStale(received))
        {
            return;
        }

        try
        {
            var deadLetterQueue = await _transport.EnsureDeadLetterQueueAsync(Queue, cancellationToken).ConfigureAwait(false);
            var properties = AmqpEnvelopeCodec.CopyForRepublish(received.Properties, attempts, reason, Queue, headers, Guid.CreateVersion7(_transport.TimeProvider.GetUtcNow()));
            await _transport.RepublishAsync(deadLetterQueue, properties, received.Envelope.Body, Describe(received), cancellationToken).ConfigureAwait(false);
            await _acks.AckAsync(received.DeliveryTag, received.Generation, cancellationToken).ConfigureAwait(false);
            _timeouts.Settled(received.Envelope.MessageId);
        }
        catch
        {
            // The pipeline's last resort failed too (the store and the dead-letter queue both refuse): handed back at once,
            // the broker would redeliver it as fast as it can, to fail the same way, for as long as both stay down.
            RequeueLater(received);
            throw;
        }
    }

    private static MessageLabel Describe(RabbitMqDelivery received) => received.DecodeFailure is null
        ? new(received.Envelope.MessageId, received.Envelope.MessageType, null)
        : new(Guid.Empty, null, received.Properties.MessageId);

    // After a connection or channel loss the broker has taken every unacked delivery back (and redelivers it); settling a
    // delivery of the lost channel would duplicate it (a retry copy) or be ignored (an ack), so it is left alone. A
    // delivery is of a lost channel when the channel is down now, or the consumer was registered again since it came.
    private bool IsStale(RabbitMqDelivery received)
    {
        if (received.Generation == Volatile.Read(ref _generation) && _channel.IsOpen)
        {
            return false;
        }

        Log.StaleDeliveryNotSettled(_logger, received.Envelope.MessageId, Queue);
        return true;
    }

    /// <summary>How long a delivery whose retry copy or dead-letter copy was refused is held unacked before it goes back.</summary>
    internal TimeSpan HandBackDelay => _transport.Options.NetworkRecoveryInterval;

    // Held unacked for one recovery interval before it goes back to the queue; a stop or a lost channel meanwhile hands
    // it back with the channel instead.
    private void RequeueLater(RabbitMqDelivery received) => _ = RequeueLaterAsync(received);

    private async Task RequeueLaterAsync(RabbitMqDelivery received)
    {
        try
        {
            await Task.Delay(HandBackDelay, _transport.TimeProvider, _stopping.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
        {
            return;
        }

        await RequeueAsync(received).ConfigureAwait(false);
    }

    private async ValueTask RequeueAsync(RabbitMqDelivery received)
    {
        // The settle failed half way: hand the delivery back so it is not stuck unacked on a channel that stays open.
        try
        {
            if (!IsStale(received) && _channel.IsOpen)
            {
                await _acks.RequeueAsync(received.DeliveryTag, received.Generation, CancellationToken.None).ConfigureAwait(false);
            }
        }
#pragma warning disable CA1031 // The original failure is what the caller needs to see.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    private async Task OnReceivedAsync(ulong deliveryTag, bool redelivered, IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> delivered)
    {
        var stop = _stopping.Token;
        if (stop.IsCancellationRequested)
        {
            // Left unacked: it returns to the queue when the channel closes.
            return;
        }

        var generation = Volatile.Read(ref _generation);
        var receivedAt = _transport.TimeProvider.GetTimestamp();
        _acks.Received(deliveryTag, generation);
        ReadOnlyMemory<byte> body = default;
        try
        {
            // The client reuses the body buffer after this handler returns; a delivery outlives it, so this is the one copy.
            // The properties are already parsed into an object of their own, which the client never reuses: kept as they are.
            body = Copy(delivered.Span);
            var envelope = AmqpEnvelopeCodec.Decode(properties, body, redelivered, _rawType, _transport.Options.Source, _transport.TimeProvider, out var malformed);
            Exception? failure = malformed;
            if (failure is not null)
            {
                AdapterLog.Undecodable(_logger, Queue, failure.Message);
            }
            else if (redelivered && _timeouts.CutOffTooOften(envelope.MessageId) is { } cutOffs)
            {
                // Run again, it would be cut off again, and come back for ever: the pipeline dead-letters it with the reason.
                failure = new HeraldException($"Its handler ran longer than the broker's consumer_timeout on {cutOffs} deliveries, each cut off by the broker closing the channel and redelivering it; it is not run again. Raise consumer_timeout for queue '{Queue}' (a consumer-timeout policy on RabbitMQ 3.11.15 and later) above the handler's longest run, then replay it.");
                Log.ConsumerTimeoutDeadLettered(_logger, envelope.MessageId, Queue, cutOffs);
            }
            else if (redelivered && _maxDeliveries is { } max && AmqpEnvelopeCodec.UnsettledDeliveries(properties) is { } unsettled && unsettled >= max)
            {
                // The broker's count outlives this process: a message whose handler never gets to settle it (cut off by
                // consumer_timeout, or bringing its process down) would come back for ever, whichever process takes it.
                failure = new HeraldException($"It was delivered {unsettled} times without being settled (the quorum queue's delivery count), as many as MaxDeliveries ({max}) allows; it is not run again. Likely its handler ran longer than the broker's consumer_timeout, or the process stopped or crashed while handling it (a message that brings its process down does so each time): see the logs of the processes that ran it, then replay it.");
                Log.DeliveryLimitDeadLettered(_logger, envelope.MessageId, Queue, unsettled, max);
            }

            var received = new RabbitMqDelivery(this, deliveryTag, properties, envelope, failure, generation) { ReceivedAt = receivedAt };
            await _lanes.WriteAsync(received, failure is null ? envelope.PartitionKey : null, stop).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            // Left unacked: it returns to the queue when the channel closes.
        }
#pragma warning disable CA1031 // An exception must never escape into the client's dispatch, nor leave the delivery unsettled.
        catch (Exception e)
#pragma warning restore CA1031
        {
            AdapterLog.ReceiveFailed(_logger, e, Queue);
            await DeadLetterUnreceivedAsync(deliveryTag, properties, body, generation, e).ConfigureAwait(false);
        }
    }

    // Uninitialized: every byte is written at once.
    private static byte[] Copy(ReadOnlySpan<byte> body)
    {
        var copy = GC.AllocateUninitializedArray<byte>(body.Length);
        body.CopyTo(copy);
        return copy;
    }

    /// <summary>
    /// Settles a delivery that failed before reaching the pipeline: a copy goes to the dead-letter queue with the reason
    /// (from which the drain moves it into the dead-letter store), or, if even that fails, it is handed back to the queue.
    /// </summary>
    private async ValueTask DeadLetterUnreceivedAsync(ulong deliveryTag, IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> body, int generation, Exception failure)
    {
        var placeholder = new Envelope { MessageId = Guid.Empty, MessageType = string.Empty, Time = default, Body = body };
        var received = new RabbitMqDelivery(this, deliveryTag, properties, placeholder, failure, generation);
        try
        {
            await DeadLetterAsync(received, attempts: 1, $"Receiving it failed: {failure.GetType().Name}: {failure.Message}", headers: null, CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Logged; DeadLetterAsync handed it back to the queue.
        catch (Exception e)
#pragma warning restore CA1031
        {
            AdapterLog.UnreceivedDeadLetterFailed(_logger, e, Queue);
        }
    }

    private ValueTask HandleAsync(RabbitMqDelivery received)
    {
        // The broker took it back with its lost channel and hands it out again: running it would only duplicate that run
        // (and, behind a handler cut off by consumer_timeout, keep the lane busy with copies the broker no longer waits on).
        if (IsStale(received))
        {
            return ValueTask.CompletedTask;
        }

        // Tracked while it runs, so a consumer_timeout closing the channel can tell which handlers it cut off.
        _timeouts.Started(received);

        // Aborted by shutdown (false): not a failed attempt; left unsettled, the channel close hands it back.
        var handled = Herald.Internal.DeliverySettlement.RunAsync(_handler, received, _logger, _aborting.Token);
        if (handled.IsCompletedSuccessfully)
        {
            // Read, so a pooled source that finished meanwhile goes back to its pool.
            _ = handled.Result;
            _timeouts.Finished(received);
            return ValueTask.CompletedTask;
        }

        return AwaitAsync(handled, received, _timeouts);

        static async ValueTask AwaitAsync(ValueTask<bool> handled, RabbitMqDelivery received, ConsumerTimeouts timeouts)
        {
            try
            {
                _ = await handled.ConfigureAwait(false);
            }
            finally
            {
                timeouts.Finished(received);
            }
        }
    }

    // Consume-ok comes through the same ordered dispatch as deliveries, before the first delivery of a (recovered)
    // channel: every delivery received after it belongs to the new registration.
    private void OnRegistered() => _acks.Reset(Interlocked.Increment(ref _generation));

    // The broker cancelled the consumer, its queue deleted behind Herald's back: left alone it would stay idle for good
    // while the process looks healthy, so the queue (with its bindings) is declared again and consumed again.
    private void OnCancelledByBroker()
    {
        if (!_stopping.IsCancellationRequested)
        {
            Log.ConsumerCancelledByBroker(_logger, Queue);
            RequestResume();
        }
    }

    // The broker closed the channel on its own with the connection up (consumer_timeout's 406 on an unacked delivery, or
    // any channel error): the client reopens channels only with a lost connection, so the consumer would stay idle for
    // good. A channel shut down with its connection is left to the client's recovery.
    // The event's sender is the client's inner channel, not this one: each channel is captured instead, and a replaced
    // channel's event ignored.
    private void Watch(IChannel channel) => channel.ChannelShutdownAsync += (_, reason) =>
    {
        if (reason.Initiator == ShutdownInitiator.Peer && ReferenceEquals(channel, _channel) && _connection.IsOpen && !_stopping.IsCancellationRequested)
        {
            Log.ConsumerChannelClosedByBroker(_logger, Queue, reason.ReplyCode, reason.ReplyText);
            if (ConsumerTimeouts.IsConsumerTimeout(reason, out var timeout))
            {
                // Counted before consuming again, so the redelivery of a handler cut off too often is already known.
                foreach (var (messageId, cutOffs) in _timeouts.ChannelTimedOut(Volatile.Read(ref _generation), timeout))
                {
                    Log.ConsumerTimeoutCutOff(_logger, messageId, Queue, cutOffs, ConsumerTimeouts.MaxCutOffs);
                }
            }

            RequestResume();
        }

        return Task.CompletedTask;
    };

    // One resume at a time; a request while one runs makes it go round once more, so a channel closed (or a consumer
    // cancelled) just after it consumed again is not left idle.
    private void RequestResume()
    {
        lock (_resumeGate)
        {
            if (_stopping.IsCancellationRequested)
            {
                return;
            }

            if (_resumeActive)
            {
                _resumeAgain = true;
                return;
            }

            _resumeActive = true;
            _resuming = Task.Run(() => ResumeAsync(_stopping.Token));
        }
    }

    private async Task ResumeAsync(CancellationToken stop)
    {
        try
        {
            do
            {
                await ResumeOnceAsync(stop).ConfigureAwait(false);
            }
            while (AgainOrDone());
        }
#pragma warning disable CA1031 // Reported: the consumer no longer consumes, and the host's health check must say so.
        catch (Exception e) when (!stop.IsCancellationRequested)
#pragma warning restore CA1031
        {
            // Not a broker failure (those are tried again): nothing is left to resume this consumer.
            Log.ConsumerResumeAbandoned(_logger, e, Queue);
            _completion.TrySetException(e);
        }
        finally
        {
            lock (_resumeGate)
            {
                _resumeActive = false;
            }
        }

        bool AgainOrDone()
        {
            lock (_resumeGate)
            {
                var again = _resumeAgain && !stop.IsCancellationRequested;
                _resumeAgain = false;
                _resumeActive = again;
                return again;
            }
        }
    }

    private async Task ResumeOnceAsync(CancellationToken stop)
    {
        var interval = _transport.Options.NetworkRecoveryInterval;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                // A 404 on basic.consume (the queue deleted again since it was declared) closed the channel, and the
                // client reopens channels only with their connection: every later try would fail on the closed one.
                if (!_channel.IsOpen && _connection.IsOpen)
                {
                    await ReplaceChannelAsync(stop).ConfigureAwait(false);
                }

                await _transport.RestoreQueueAsync(Queue, stop).ConfigureAwait(false);
                if (_transport.QueueRestoredForTests is { } restored)
                {
                    await restored(Queue).ConfigureAwait(false);
                }

                // The client still records the cancelled consumer and would start it again when the connection recovers;
                // cancelling its tag forgets it (the broker ignores a tag it does not know).
                if (_consumerTag is { } cancelled)
                {
                    await _channel.BasicCancelAsync(cancelled, noWait: true, stop).ConfigureAwait(false);
                }

                _consumerTag = await _channel.BasicConsumeAsync(Queue, autoAck: false, new Subscriber(_channel, this), stop).ConfigureAwait(false);
                Log.ConsumerResumed(_logger, Queue);
                return;
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is HeraldException || RabbitMqTransport.IsBrokerFailure(e))
            {
                Log.ConsumerResumeFailed(_logger, e, Queue, interval);
            }

            try
            {
                await Task.Delay(interval, _transport.TimeProvider, stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task ReplaceChannelAsync(CancellationToken stop)
    {
        var channel = await OpenChannelAsync(_connection, _prefetch, stop).ConfigureAwait(false);
        var closed = _channel;

        // A new generation first: a delivery of the closed channel is stale from now on, its tag never settled on the new one.
        _acks.UseChannel(channel, Interlocked.Increment(ref _generation));
        Watch(channel);
        _channel = channel;
        _consumerTag = null;
        try
        {
            await closed.DisposeAsync().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // The closed channel is done with; the consumer goes on with the new one.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.ConsumerStopFailed(_logger, e, Queue);
        }
    }

    private async ValueTask FlushAcksAsync()
    {
        try
        {
            if (_channel.IsOpen)
            {
                await _acks.FlushAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }
#pragma warning disable CA1031 // Logged; the unacked deliveries return to the queue when the channel closes.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.AckFlushFailed(_logger, e, Queue);
        }
    }

    private async Task CloseChannelAsync()
    {
        await _closeGate.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_closed)
            {
                return;
            }

            _closed = true;
            if (_channel.IsOpen)
            {
                await _channel.CloseAsync().ConfigureAwait(false);
            }

            await _channel.DisposeAsync().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // A channel lost with its connection cannot be closed; the broker has already requeued its deliveries.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.ConsumerStopFailed(_logger, e, Queue);
        }
        finally
        {
            _closeGate.Release();
        }
    }

    /// <summary>
    /// The client's consumer: hands deliveries and (re)registrations straight to the consumer, without the event
    /// arguments and handler lists of the client's eventing consumer, one of each per delivery.
    /// </summary>
    private sealed class Subscriber(IChannel channel, RabbitMqConsumer consumer) : AsyncDefaultBasicConsumer(channel)
    {
        public override Task HandleBasicDeliverAsync(
            string consumerTag,
            ulong deliveryTag,
            bool redelivered,
            string exchange,
            string routingKey,
            IReadOnlyBasicProperties properties,
            ReadOnlyMemory<byte> body,
            CancellationToken cancellationToken = default) =>
            consumer.OnReceivedAsync(deliveryTag, redelivered, properties, body);

        public override async Task HandleBasicConsumeOkAsync(string consumerTag, CancellationToken cancellationToken = default)
        {
            await base.HandleBasicConsumeOkAsync(consumerTag, cancellationToken).ConfigureAwait(false);
            consumer.OnRegistered();
        }

        // Only on basic.cancel from the broker (not on cancel-ok, nor when the channel shuts down with its connection).
        public override async Task HandleBasicCancelAsync(string consumerTag, CancellationToken cancellationToken = default)
        {
            await base.HandleBasicCancelAsync(consumerTag, cancellationToken).ConfigureAwait(false);
            consumer.OnCancelledByBroker();
        }
    }
}
