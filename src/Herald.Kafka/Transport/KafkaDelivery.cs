using Confluent.Kafka;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Kafka.Transport;

/// <summary>
/// A delivery from a Kafka partition. Ack finishes its offset; a nack produces a copy (to the queue's topic, or through
/// its retry topic when delayed) and a dead letter a copy to the dead-letter topic, each confirmed before the offset
/// finishes. Settling a delivery whose partition was abandoned does nothing: its next owner handles it again.
/// </summary>
internal sealed class KafkaDelivery(string queue, KafkaConsumer consumer, KafkaDelivery.Received received)
    : Delivery(received.Envelope, queue, received.DecodeFailure), IBrokerPartitionedDelivery
{
    /// <inheritdoc />
    public BrokerPartition BrokerPartition => received.Entry.Partition.Broker;

    /// <summary>Set by the settlement that completed the offset, so the consumer finishes it once.</summary>
    public bool Completed { get; private set; }

    public Received Item => received;

    protected override ValueTask OnAckAsync(CancellationToken cancellationToken)
    {
        Completed = !received.Entry.Partition.Abandoned.IsCancellationRequested;
        return ValueTask.CompletedTask;
    }

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) =>
        OnNackAsync(delay, EmptyHeaders, cancellationToken);

    protected override async ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
    {
        if (received.Entry.Partition.Abandoned.IsCancellationRequested)
        {
            return;
        }

        await consumer.RedeliverAsync(received, delay, headers, cancellationToken).ConfigureAwait(false);
        Completed = true;
    }

    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) =>
        OnDeadLetterAsync(reason, EmptyHeaders, cancellationToken);

    protected override async ValueTask OnDeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
    {
        if (received.Entry.Partition.Abandoned.IsCancellationRequested)
        {
            return;
        }

        await consumer.DeadLetterAsync(received, reason, headers, cancellationToken).ConfigureAwait(false);
        Completed = true;
    }

    private static readonly IReadOnlyDictionary<string, string> EmptyHeaders = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>One record as consumed: the raw message (republished as it is), its offset's entry and its decoding.</summary>
    internal sealed record Received(Message<byte[]?, byte[]> Message, PartitionProgress.Entry Entry, Envelope Envelope, Exception? DecodeFailure);
}
