using Confluent.Kafka;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Kafka.Transport;

/// <summary>
/// A delivery from a Kafka partition. Ack finishes its offset; a nack produces a copy (to the queue's topic, or through
/// its retry topic when delayed) and a dead letter a copy to the dead-letter topic, each confirmed before the offset
/// finishes. Settling a delivery whose partition was abandoned does nothing: its next owner handles it again.
/// Made on the poll thread as the record is taken (one object per record: the record, its decoding and its offset's place).
/// </summary>
internal sealed class KafkaDelivery(string queue, KafkaConsumer consumer, Message<byte[]?, byte[]> message, PartitionProgress.Entry entry, Envelope envelope, Exception? decodeFailure)
    : Delivery(envelope, queue, decodeFailure), IBrokerPartitionedDelivery
{
    /// <inheritdoc />
    public BrokerPartition BrokerPartition => entry.Partition.Broker;

    /// <summary>Set by the settlement that completed the offset, so the consumer finishes it once.</summary>
    public bool Completed { get; private set; }

    /// <summary>The record as consumed (republished as it is by a nack or a dead letter).</summary>
    public Message<byte[]?, byte[]> Message => message;

    /// <summary>The offset's place in its partition's progress.</summary>
    public PartitionProgress.Entry Entry => entry;

    protected override ValueTask OnAckAsync(CancellationToken cancellationToken)
    {
        Completed = !Abandoned;
        return ValueTask.CompletedTask;
    }

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) =>
        OnNackAsync(delay, EmptyHeaders, cancellationToken);

    protected override ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        Abandoned ? ValueTask.CompletedTask : CompleteAfterAsync(consumer.RedeliverAsync(message, delay, headers, cancellationToken));

    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) =>
        OnDeadLetterAsync(reason, EmptyHeaders, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        Abandoned ? ValueTask.CompletedTask : CompleteAfterAsync(consumer.DeadLetterAsync(message, reason, headers, cancellationToken));

    /// <summary>Whether its partition was abandoned: then its settlement does nothing, and the partition's next owner handles it again.</summary>
    private bool Abandoned => entry.Partition.Abandoned.IsCancellationRequested;

    /// <summary>A nack's or dead letter's copy, once confirmed, completes the offset.</summary>
    private async ValueTask CompleteAfterAsync(ValueTask copy)
    {
        await copy.ConfigureAwait(false);
        Completed = true;
    }

    private static readonly IReadOnlyDictionary<string, string> EmptyHeaders = new Dictionary<string, string>(StringComparer.Ordinal);
}
