using System.Globalization;
using Confluent.Kafka;
using Herald.Transport;

namespace Herald.Kafka.Transport;

internal sealed partial class KafkaTransport
{
    /// <summary>
    /// Reads the queue's dead-letter topic with a consumer group of its own (<c>{dead-letter topic}.drain</c>) from its
    /// committed offsets up to the end the topic had when the drain began, hands each record on, and commits it only
    /// after that returned; on failure the drain stops and the record stays for the next drain. Offsets are committed in
    /// order, so unlike the other sources this one does not go on past a refused record (see <see cref="INativeDeadLetterSource"/>).
    /// </summary>
    protected override async ValueTask<int> DrainDeadLettersCoreAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken)
    {
        var topic = _options.DeadLetterTopicName(queue);
        await EnsureTopicAsync(topic, cancellationToken).ConfigureAwait(false);
        using var consumer = BuildConsumer(_options.GroupIdPrefix + topic + ".drain").Build();
        var (start, ends) = await Task.Run(() => Positions(consumer, topic), cancellationToken).ConfigureAwait(false);
        var left = start.Where(s => s.Offset.Value < ends[s.TopicPartition]).ToList();
        if (left.Count == 0)
        {
            return 0;
        }

        consumer.Assign(left);
        var remaining = left.ToDictionary(p => p.TopicPartition, p => ends[p.TopicPartition]);
        var moved = 0;
        var quiet = TimeProvider.GetTimestamp();
        while (remaining.Count > 0)
        {
            var result = await Task.Run(() => consumer.Consume(TimeSpan.FromMilliseconds(200)), cancellationToken).ConfigureAwait(false);
            if (result?.Message is null)
            {
                // Records below the end seen at the start may be gone (retention, compaction): stop once nothing comes.
                if (TimeProvider.GetElapsedTime(quiet) > TimeSpan.FromSeconds(10))
                {
                    break;
                }

                continue;
            }

            quiet = TimeProvider.GetTimestamp();
            var message = result.Message;
            var envelope = KafkaEnvelopeCodec.Decode(message, _options.Source, TimeProvider, out var failure);
            await moveAsync(
                new NativeDeadLetter
                {
                    Envelope = envelope,
                    Queue = KafkaEnvelopeCodec.Header(message, KafkaEnvelopeCodec.OriginQueueHeader) ?? queue,
                    Reason = KafkaEnvelopeCodec.Header(message, KafkaEnvelopeCodec.ReasonHeader),
                    Time = result.Message.Timestamp.Type == TimestampType.NotAvailable ? null : result.Message.Timestamp.UtcDateTime,
                    DecodeFailure = failure,
                },
                cancellationToken).ConfigureAwait(false);
            consumer.Commit([new TopicPartitionOffset(result.TopicPartition, result.Offset + 1)]);
            moved++;
            if (result.Offset.Value + 1 >= remaining[result.TopicPartition])
            {
                remaining.Remove(result.TopicPartition);
            }
        }

        consumer.Close();
        return moved;
    }

    private (List<TopicPartitionOffset> Start, Dictionary<TopicPartition, long> Ends) Positions(IConsumer<byte[]?, byte[]> consumer, string topic)
    {
        var metadata = _admin!.GetMetadata(topic, TimeSpan.FromSeconds(10));
        var partitions = metadata.Topics.Single(t => t.Topic == topic).Partitions.Select(p => new TopicPartition(topic, p.PartitionId)).ToList();
        var ends = new Dictionary<TopicPartition, long>();
        var start = new List<TopicPartitionOffset>();
        foreach (var committed in consumer.Committed(partitions, TimeSpan.FromSeconds(10)))
        {
            var marks = consumer.QueryWatermarkOffsets(committed.TopicPartition, TimeSpan.FromSeconds(10));
            ends[committed.TopicPartition] = marks.High.Value;
            start.Add(committed.Offset == Offset.Unset ? new TopicPartitionOffset(committed.TopicPartition, marks.Low) : committed);
        }

        return (start, ends);
    }

    /// <summary>
    /// Copies a record to the dead-letter topic of <paramref name="queue"/> with the queue it came from and the reason (what
    /// the drain reads back), without the retry bookkeeping; completes once the cluster confirmed the copy.
    /// </summary>
    internal ValueTask DeadLetterAsync(Message<byte[]?, byte[]> message, string queue, string reason, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken)
    {
        var copy = KafkaEnvelopeCodec.CopyForRepublish(
            message,
            [
                new(KafkaEnvelopeCodec.AttemptHeader, KafkaEnvelopeCodec.Attempt(message).ToString(CultureInfo.InvariantCulture)),
                new(KafkaEnvelopeCodec.OriginQueueHeader, queue),
                new(KafkaEnvelopeCodec.ReasonHeader, reason),
                new(KafkaEnvelopeCodec.DueHeader, null),
                new(KafkaEnvelopeCodec.TargetHeader, null),
            ],
            headers);
        return ProduceAsync(_options.DeadLetterTopicName(queue), copy, cancellationToken);
    }

    /// <inheritdoc />
    protected override void ValidateQueueName(string queue, string parameter) => ValidateName(queue, parameter);
}
