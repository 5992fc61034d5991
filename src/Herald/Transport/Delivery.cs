using Herald.Messages;

namespace Herald.Transport;

/// <summary>
/// One delivery of a message to a consumer. It is settled exactly once: ack (done), nack (deliver again,
/// after a delay) or dead-letter (never again). Later settle calls are ignored.
/// </summary>
public abstract class Delivery
{
    private int _settled;

    /// <summary>Creates a delivery of the envelope from the queue.</summary>
    protected Delivery(Envelope envelope, string queue)
        : this(envelope, queue, decodeFailure: null)
    {
    }

    /// <summary>
    /// Creates a delivery the transport could not decode: <paramref name="envelope"/> holds what could be read (the raw
    /// body, and the id and type when present), and the pipeline dead-letters it at once with <paramref name="decodeFailure"/>
    /// as the reason, instead of handling it.
    /// </summary>
    protected Delivery(Envelope envelope, string queue, Exception? decodeFailure)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        ArgumentNullException.ThrowIfNull(queue);
        Envelope = envelope;
        Queue = queue;
        DecodeFailure = decodeFailure;
    }

    /// <summary>The delivered message; <see cref="Envelope.DeliveryAttempt"/> counts deliveries from 1.</summary>
    public Envelope Envelope { get; private set; }

    /// <summary>The queue it came from.</summary>
    public string Queue { get; }

    /// <summary>Why the transport could not decode this delivery, or null; such a delivery goes to the dead letters unhandled.</summary>
    public Exception? DecodeFailure { get; }

    /// <summary>True once ack, nack or dead-letter has been called.</summary>
    public bool IsSettled => Volatile.Read(ref _settled) != 0;

    /// <summary>
    /// True when the transport will not deliver this message again after a nack (its broker's delivery limit is reached, as
    /// NATS JetStream's <c>MaxDeliver</c>): a failure the retry policy would redeliver is dead-lettered by the pipeline now,
    /// with its error, instead of being left to the transport's own dead letters. False by default.
    /// </summary>
    public virtual bool IsLastDelivery => false;

    /// <summary>
    /// How long the transport holds this delivery, unsettled, after a nack or dead-letter move of it failed, before it hands
    /// it back to be delivered again (so a refusing broker does not make a redelivery loop); what the pipeline logs. Zero by
    /// default: at once.
    /// </summary>
    public virtual TimeSpan HandBackDelayAfterFailedSettle => TimeSpan.Zero;

    /// <summary>Marks the message handled; the transport forgets it.</summary>
    public ValueTask AckAsync(CancellationToken cancellationToken = default) =>
        TrySettle() ? OnAckAsync(cancellationToken) : ValueTask.CompletedTask;

    /// <summary>Returns the message to the queue, to be delivered again after <paramref name="delay"/> (zero: at once).</summary>
    public ValueTask NackAsync(TimeSpan delay, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);
        return TrySettle() ? OnNackAsync(delay, cancellationToken) : ValueTask.CompletedTask;
    }

    /// <summary>
    /// Returns the message to the queue like <see cref="NackAsync(TimeSpan, CancellationToken)"/>, the copy delivered again
    /// carrying <paramref name="headers"/> (added or replaced): what the pipeline must remember across deliveries, such as
    /// <see cref="HeaderNames.FirstFailure"/>.
    /// </summary>
    public ValueTask NackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);
        ArgumentNullException.ThrowIfNull(headers);
        return TrySettle() ? OnNackAsync(delay, headers, cancellationToken) : ValueTask.CompletedTask;
    }

    /// <summary>Moves the message to the transport's dead letters with the reason; it is not delivered again.</summary>
    public ValueTask DeadLetterAsync(string reason, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(reason);
        return TrySettle() ? OnDeadLetterAsync(reason, cancellationToken) : ValueTask.CompletedTask;
    }

    /// <summary>
    /// Moves the message to the transport's dead letters like <see cref="DeadLetterAsync(string, CancellationToken)"/>, the
    /// copy kept there carrying <paramref name="headers"/> (added or replaced): the pipeline's dead-letter record, so the
    /// drain can move it into the dead-letter store later.
    /// </summary>
    public ValueTask DeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(reason);
        ArgumentNullException.ThrowIfNull(headers);
        return TrySettle() ? OnDeadLetterAsync(reason, headers, cancellationToken) : ValueTask.CompletedTask;
    }

    /// <summary>Acknowledges the message to the broker.</summary>
    protected abstract ValueTask OnAckAsync(CancellationToken cancellationToken);

    /// <summary>Returns the message for redelivery after the delay.</summary>
    protected abstract ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken);

    /// <summary>Moves the message to the native dead letters.</summary>
    protected abstract ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken);

    /// <summary>
    /// Returns the message for redelivery after the delay, with the headers on the copy. A transport that cannot change a
    /// message's headers leaves this as it is: the headers are dropped, and what they carried falls back to a default.
    /// </summary>
    protected virtual ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        OnNackAsync(delay, cancellationToken);

    /// <summary>
    /// Moves the message to the native dead letters with the headers on the copy. A transport that cannot change a
    /// message's headers leaves this as it is: the headers are dropped, and the drain records the reason alone.
    /// </summary>
    protected virtual ValueTask OnDeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        OnDeadLetterAsync(reason, cancellationToken);

    /// <summary>
    /// Makes this settled delivery the delivery of <paramref name="envelope"/>, unsettled: for a transport whose handler
    /// keeps no delivery past its call (see <see cref="IForgetsDeliveries"/>), so one object serves a worker's deliveries.
    /// </summary>
    internal void Reuse(Envelope envelope)
    {
        Envelope = envelope;
        Volatile.Write(ref _settled, 0);
    }

    /// <summary>
    /// Settles nothing, but takes the settlement from whoever comes later: true when nothing settled it yet, so the consumer
    /// hands the message back itself and the handler's late ack or nack does nothing (a handler a stop abandoned).
    /// </summary>
    internal bool TryTakeBack() => TrySettle();

    private bool TrySettle() => Interlocked.Exchange(ref _settled, 1) == 0;
}
