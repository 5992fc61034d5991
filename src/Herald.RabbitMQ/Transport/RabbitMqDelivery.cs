using Herald.Messages;
using Herald.Transport;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Transport;

/// <summary>
/// One delivery from a consumer's channel, as received: its tag on the channel, its properties (kept for republishing),
/// a copy of its body (the envelope's) and its decoding. A malformed one carries its decode failure, so the pipeline
/// dead-letters it. The one object per delivery that the consumer's lanes carry and the pipeline sees.
/// </summary>
internal sealed class RabbitMqDelivery(
    RabbitMqConsumer consumer, ulong deliveryTag, IReadOnlyBasicProperties properties, Envelope envelope, Exception? decodeFailure, int generation)
    : Delivery(envelope, consumer.Queue, decodeFailure)
{
    public ulong DeliveryTag => deliveryTag;

    public IReadOnlyBasicProperties Properties => properties;

    /// <summary>The registration of the consumer (on the channel) it came through; see <see cref="AckBatcher.Reset"/>.</summary>
    public int Generation => generation;

    /// <summary>When it was received (a <see cref="TimeProvider.GetTimestamp"/>), to tell which ones a consumer_timeout cut off.</summary>
    public long ReceivedAt { get; init; }

    /// <summary>See <see cref="RabbitMqConsumer.HandBackDelay"/>.</summary>
    public override TimeSpan HandBackDelayAfterFailedSettle => consumer.HandBackDelay;

    protected override ValueTask OnAckAsync(CancellationToken cancellationToken) =>
        consumer.AckAsync(this, cancellationToken);

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) =>
        consumer.RedeliverAsync(this, Envelope.DeliveryAttempt, delay, headers: null, cancellationToken);

    protected override ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        consumer.RedeliverAsync(this, Envelope.DeliveryAttempt, delay, headers, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) =>
        consumer.DeadLetterAsync(this, Envelope.DeliveryAttempt, reason, headers: null, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        consumer.DeadLetterAsync(this, Envelope.DeliveryAttempt, reason, headers, cancellationToken);
}
