using Herald.Messages;
using Herald.Transport;

namespace Herald.RabbitMQ;

internal sealed class RabbitMqDelivery(Envelope envelope, string queue, RabbitMqConsumer consumer, RabbitMqConsumer.Received received)
    : Delivery(envelope, queue)
{
    protected override ValueTask OnAckAsync(CancellationToken cancellationToken) =>
        consumer.AckAsync(received, cancellationToken);

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) =>
        consumer.RedeliverAsync(received, Envelope.DeliveryAttempt, delay, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) =>
        consumer.DeadLetterAsync(received, Envelope.DeliveryAttempt, reason, cancellationToken);
}
