using Herald.Transport;

namespace Herald.Postgres.Transport;

/// <summary>A claimed message; settling it is one statement guarded by the consumer's lease.</summary>
internal sealed class PostgresQueueDelivery(QueuedMessage message, string queue, PostgresQueueConsumer consumer)
    : Delivery(message.Envelope, queue)
{
    protected override ValueTask OnAckAsync(CancellationToken cancellationToken) =>
        consumer.AckAsync(message, cancellationToken);

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) =>
        consumer.NackAsync(message, delay, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) =>
        consumer.DeadLetterAsync(message, reason, cancellationToken);
}
