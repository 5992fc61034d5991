using Confluent.Kafka;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Kafka.Transport;

/// <summary>
/// A delivery from a Kafka partition. Ack finishes its offset; a nack produces a copy (to the queue's topic, or through
/// its retry topic when delayed) and a dead letter a copy to the dead-letter topic, each confirmed before the offset
/// finishes; a copy that failed is owed, and the consumer makes it again while it holds the partition. Settling a delivery
/// whose partition was abandoned does nothing: its next owner handles it again.
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

    /// <summary>True when a nack's or dead letter's copy failed and was not made since: the offset cannot finish without it.</summary>
    public bool Owes => !Completed && _owed is not null;

    /// <summary>Why the owed copy failed last time.</summary>
    public Exception? OwedFailure { get; private set; }

    /// <summary>Whether the owed copy is a redelivery (not a dead letter).</summary>
    public bool OwesRedelivery { get; private set; }

    // The copy a settlement still owes after it failed (null: none), with the headers it was given.
    private Func<CancellationToken, ValueTask>? _owed;
    private IReadOnlyDictionary<string, string> _owedHeaders = EmptyHeaders;

    /// <summary>Makes the owed copy again; once it is confirmed the offset completes.</summary>
    public async ValueTask SettleOwedAsync(CancellationToken cancellationToken)
    {
        try
        {
            await _owed!(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            OwedFailure = e;
            throw;
        }

        Completed = true;
    }

    /// <summary>Owes a dead-letter copy with <paramref name="reason"/> instead of the redelivery the cluster keeps refusing.</summary>
    public void DeadLetterInstead(string reason)
    {
        var headers = _owedHeaders;
        _owed = ct => consumer.DeadLetterAsync(message, reason, headers, ct);
        OwesRedelivery = false;
    }

    protected override ValueTask OnAckAsync(CancellationToken cancellationToken)
    {
        Completed = !Abandoned;
        return ValueTask.CompletedTask;
    }

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) =>
        OnNackAsync(delay, EmptyHeaders, cancellationToken);

    protected override ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        Abandoned ? ValueTask.CompletedTask : CompleteAfterAsync(ct => consumer.RedeliverAsync(message, delay, headers, ct), redelivery: true, headers, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) =>
        OnDeadLetterAsync(reason, EmptyHeaders, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        Abandoned ? ValueTask.CompletedTask : CompleteAfterAsync(ct => consumer.DeadLetterAsync(message, reason, headers, ct), redelivery: false, headers, cancellationToken);

    /// <summary>Whether its partition was abandoned: then its settlement does nothing, and the partition's next owner handles it again.</summary>
    private bool Abandoned => entry.Partition.IsAbandoned;

    /// <summary>A nack's or dead letter's copy, once confirmed, completes the offset; one that failed is owed.</summary>
    private async ValueTask CompleteAfterAsync(Func<CancellationToken, ValueTask> copy, bool redelivery, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
    {
        try
        {
            await copy(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            _owed = copy;
            _owedHeaders = headers;
            OwesRedelivery = redelivery;
            OwedFailure = e;
            throw;
        }

        Completed = true;
    }

    private static readonly IReadOnlyDictionary<string, string> EmptyHeaders = new Dictionary<string, string>(StringComparer.Ordinal);
}
