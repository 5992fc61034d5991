using Herald.Messages;
using Herald.Testing.Observing;
using Herald.Transport;

namespace Herald.Testing.Internal;

/// <summary>
/// The host's transport, reporting what passes through it: every send and publish, and every delivery to this host's
/// endpoints with how the pipeline settled it. It changes nothing on the way.
/// </summary>
internal sealed class ObservingTransport(ITransport inner, HarnessRecorder recorder) : ITransport, INativeDeadLetterSource
{
    public ITransport Inner => inner;

    public string Name => inner.Name;

    public TransportCapabilities Capabilities => inner.Capabilities;

    public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) => inner.DeclareQueueAsync(queue, cancellationToken);

    public async ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default)
    {
        await inner.BindAsync(topic, queue, cancellationToken).ConfigureAwait(false);
        recorder.Tracker.Bound(topic, queue);
    }

    public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        DispatchAsync(queue, published: false, envelope, options, cancellationToken);

    public ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        DispatchAsync(topic, published: true, envelope, options, cancellationToken);

    public async ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(handler);
        var consumer = await inner.ConsumeAsync(queue, options, (delivery, token) => ObserveAsync(handler, delivery, token), cancellationToken).ConfigureAwait(false);
        recorder.Tracker.Consuming(queue);
        return consumer;
    }

    public ValueTask<int> DrainDeadLettersAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken = default) =>
        inner is INativeDeadLetterSource source ? source.DrainDeadLettersAsync(queue, moveAsync, cancellationToken) : ValueTask.FromResult(0);

    public ValueTask DisposeAsync() => inner.DisposeAsync();

    private async ValueTask DispatchAsync(string destination, bool published, Envelope envelope, SendOptions? options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(envelope);

        // Counted before the transport has it, so no delivery of it can be settled before it is owed.
        var expected = recorder.Tracker.Expect(destination, published, envelope.MessageId, options?.Delay);
        try
        {
            if (published)
            {
                await inner.PublishAsync(destination, envelope, options, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await inner.SendAsync(destination, envelope, options, cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            recorder.Tracker.Forget(expected);
            throw;
        }

        recorder.RecordSent(destination, published, envelope);
    }

    private async ValueTask ObserveAsync(DeliveryHandler handler, Delivery delivery, CancellationToken cancellationToken)
    {
        var observation = new DeliveryObservation(delivery.Envelope);
        var observed = new ObservingDelivery(delivery, observation, recorder);
        recorder.Tracker.Started();
        try
        {
            DeliveryObservation.Current = observation;
            await handler(observed, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            DeliveryObservation.Current = null;
            recorder.Tracker.Ended();
        }
    }
}

/// <summary>A delivery as the pipeline sees it: each settlement is passed on to the transport's own, then reported.</summary>
internal sealed class ObservingDelivery(Delivery inner, DeliveryObservation observation, HarnessRecorder recorder)
    : Delivery(inner.Envelope, inner.Queue, inner.DecodeFailure)
{
    public override bool IsLastDelivery => inner.IsLastDelivery;

    public override TimeSpan HandBackDelayAfterFailedSettle => inner.HandBackDelayAfterFailedSettle;

    protected override async ValueTask OnAckAsync(CancellationToken cancellationToken)
    {
        await inner.AckAsync(cancellationToken).ConfigureAwait(false);
        Report(observation.DeadLetter is not null ? HandlingOutcome.DeadLettered : observation.HandlersRan ? HandlingOutcome.Succeeded : HandlingOutcome.Skipped);
    }

    // Counted before the message is handed back: another worker may take the copy and settle it before the nack returns,
    // and counted after that, the message would be owed again, forever (a nack that fails hands it back as well). Observed
    // after, so a test that saw the redelivery can move the clock: its timer exists by then.
    protected override async ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        recorder.Tracker.Settled(Queue, Envelope.MessageId, delay);
        await inner.NackAsync(delay, cancellationToken).ConfigureAwait(false);
        Record(HandlingOutcome.Retrying, delay);
    }

    protected override async ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
    {
        recorder.Tracker.Settled(Queue, Envelope.MessageId, delay);
        await inner.NackAsync(delay, headers, cancellationToken).ConfigureAwait(false);
        Record(HandlingOutcome.Retrying, delay);
    }

    protected override async ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken)
    {
        await inner.DeadLetterAsync(reason, cancellationToken).ConfigureAwait(false);
        Report(HandlingOutcome.DeadLettered, reason);
    }

    protected override async ValueTask OnDeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
    {
        await inner.DeadLetterAsync(reason, headers, cancellationToken).ConfigureAwait(false);
        Report(HandlingOutcome.DeadLettered, reason);
    }

    // A settlement after which the message is owed no more.
    private void Report(HandlingOutcome outcome, string? deadLetterReason = null)
    {
        Record(outcome, redeliverAfter: null, deadLetterReason);
        recorder.Tracker.Settled(Queue, Envelope.MessageId, redeliverAfter: null);
    }

    private void Record(HandlingOutcome outcome, TimeSpan? redeliverAfter, string? deadLetterReason = null) =>
        recorder.RecordHandled(Queue, outcome, observation, redeliverAfter, deadLetterReason);
}
