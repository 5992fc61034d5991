using Herald.Transport;

namespace Herald.RabbitMQ.Transport;

/// <summary>One delivery from a consumer's channel; a malformed one carries its decode failure, so the pipeline dead-letters it.</summary>
internal sealed class RabbitMqDelivery(string queue, RabbitMqConsumer consumer, RabbitMqConsumer.Received received)
    : Delivery(received.Envelope, queue, received.DecodeFailure)
{
    protected override ValueTask OnAckAsync(CancellationToken cancellationToken) =>
        consumer.AckAsync(received, cancellationToken);

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) =>
        consumer.RedeliverAsync(received, Envelope.DeliveryAttempt, delay, headers: null, cancellationToken);

    protected override ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        consumer.RedeliverAsync(received, Envelope.DeliveryAttempt, delay, headers, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) =>
        consumer.DeadLetterAsync(received, Envelope.DeliveryAttempt, reason, headers: null, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        consumer.DeadLetterAsync(received, Envelope.DeliveryAttempt, reason, headers, cancellationToken);
}
