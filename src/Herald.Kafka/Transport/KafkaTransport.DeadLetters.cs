using System.Globalization;
using System.Runtime.ExceptionServices;
using Confluent.Kafka;
using Herald.Internal;
using Herald.Transport;

namespace Herald.Kafka.Transport;

internal sealed partial class KafkaTransport
{
    /// <summary>
    /// Reads the queue's dead-letter topic with a consumer group of its own (<c>{dead-letter topic}.drain</c>) from its
    /// committed offsets up to the end the topic had when the drain began, hands each record on, and commits it only
    /// after that returned. Offsets are committed in order, so a record <paramref name="moveAsync"/> fails on cannot be
    /// skipped where it is: once the store took another record in this round (so the failure is the record's, not the
    /// store being down), it is copied to the end of its partition (confirmed by the cluster) and committed past, so the
    /// records behind it drain while it stays in Kafka for the next rounds. Until then its partition is committed no further.
    /// </summary>
    /// <remarks>
    /// The dead letters of the retry relays serving the queue's topics are drained with the queue's own: the relay writes
    /// a record it cannot relay to <c>{retry topic}.dead-letter</c> (no or an invalid target) or <c>{bound topic}.dead-letter</c>
    /// (a target refusing it for good), which a host, draining only its endpoint's, left out of the dead-letter store.
    /// </remarks>
    protected override async ValueTask<int> DrainDeadLettersCoreAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken)
    {
        var own = _options.DeadLetterTopicName(queue);
        await EnsureTopicAsync(own, cancellationToken).ConfigureAwait(false);
        var moved = 0;
        ExceptionDispatchInfo? failed = null;
        foreach (var (topic, retryTopic) in DeadLetterTopicsOf(queue))
        {
            // Relays' dead-letter topics exist only once one was written to: a missing one holds nothing, and is not made.
            if (topic != own && !await Task.Run(() => TopicExists(topic), cancellationToken).ConfigureAwait(false))
            {
                continue;
            }

            try
            {
                moved += await DrainDeadLetterTopicAsync(topic, retryTopic, queue, moveAsync, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // The others are drained all the same: one topic's refused record must not hold theirs back.
                failed ??= ExceptionDispatchInfo.Capture(e);
            }
        }

        failed?.Throw();
        return moved;
    }

    /// <summary>
    /// The queue's dead-letter topic, then those of the retry relays serving its topics (its own and those bound to it),
    /// each of these with the retry topic it is of.
    /// </summary>
    private IEnumerable<(string Topic, string? RetryTopic)> DeadLetterTopicsOf(string queue)
    {
        var topics = TopicsOf(queue, _bindings.GetValueOrDefault(queue));
        return topics.Select(t => (_options.DeadLetterTopicName(t), (string?)null))
            .Concat(topics.Select(_options.RetryTopicName).Select(r => (_options.DeadLetterTopicName(r), (string?)r)))
            .DistinctBy(t => t.Item1, StringComparer.Ordinal);
    }

    private bool TopicExists(string topic)
    {
        try
        {
            ThrowUnlessTopicExists(topic);
            return true;
        }
        catch (HeraldException)
        {
            return false;
        }
    }

    private async ValueTask<int> DrainDeadLetterTopicAsync(
        string topic, string? retryTopic, string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken)
    {
        using var consumer = BuildOwnTopicConsumer(_options.GroupIdPrefix + topic + ".drain").Build();
        var (start, ends) = await Task.Run(() => Positions(consumer, topic), cancellationToken).ConfigureAwait(false);
        var left = start.Where(s => s.Offset.Value < ends[s.TopicPartition]).ToList();
        if (left.Count == 0)
        {
            return 0;
        }

        consumer.Assign(left);
        var remaining = left.ToDictionary(p => p.TopicPartition, p => ends[p.TopicPartition]);
        var round = new DeadLetterDrainRound();
        var refused = new RefusedDeadLetters(this, consumer);
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

            if (!remaining.TryGetValue(result.TopicPartition, out var end))
            {
                // A partition read to its end already: what it holds now (a refused record's copy, a dead letter written
                // since the round began) is the next round's, uncommitted.
                continue;
            }

            quiet = TimeProvider.GetTimestamp();
            var message = result.Message;
            var envelope = KafkaEnvelopeCodec.Decode(message, _options.Source, TimeProvider, out var failure);
            var deadLetter = new NativeDeadLetter
            {
                Envelope = envelope,
                Queue = QueueOf(message, retryTopic, queue),
                Reason = KafkaEnvelopeCodec.Header(message, KafkaEnvelopeCodec.ReasonHeader),
                Time = message.Timestamp.Type == TimestampType.NotAvailable ? null : message.Timestamp.UtcDateTime,
                DecodeFailure = failure,
                NativeId = topic + "/" + Origin(result),
            };
            if (await round.TryMoveAsync(moveAsync, deadLetter, cancellationToken).ConfigureAwait(false))
            {
                moved++;
                refused.Moved(result);
            }
            else
            {
                refused.Add(result);
            }

            if (moved > 0)
            {
                await refused.CopyToTheEndAsync(cancellationToken).ConfigureAwait(false);
            }

            if (result.Offset.Value + 1 >= end)
            {
                remaining.Remove(result.TopicPartition);
            }
        }

        consumer.Close();
        round.ThrowIfAnyFailed();
        return moved;
    }

    /// <summary>
    /// The queue a dead letter is retried to: the one it names, unless that is the retry topic it was relayed from (a record
    /// naming no valid target, which the relay dead-letters under its retry topic's name) or it names none: then the queue
    /// draining it. Sent to the retry topic, a retry would be dead-lettered by the relay again, for as often as it is retried.
    /// </summary>
    private static string QueueOf(Message<byte[]?, byte[]> message, string? retryTopic, string queue) =>
        KafkaEnvelopeCodec.Header(message, KafkaEnvelopeCodec.OriginQueueHeader) is { } origin && origin != retryTopic ? origin : queue;

    /// <summary>Where a dead letter first was in its topic (its copies carry it): one id for it however often it is read or copied.</summary>
    private static string Origin(ConsumeResult<byte[]?, byte[]> result) =>
        KafkaEnvelopeCodec.Header(result.Message, KafkaEnvelopeCodec.DeadLetterOriginHeader)
        ?? string.Create(CultureInfo.InvariantCulture, $"{result.Partition.Value}/{result.Offset.Value}/{result.Message.Timestamp.UnixTimestampMs}");

    /// <summary>
    /// The records of a drain round the store refused, each holding its partition's commit back until it is copied to the
    /// end of that partition; the records after it that were moved meanwhile are committed with it.
    /// </summary>
    private sealed class RefusedDeadLetters(KafkaTransport transport, IConsumer<byte[]?, byte[]> consumer)
    {
        private readonly List<ConsumeResult<byte[]?, byte[]>> _held = [];

        // The offset to commit in each partition once its held records are copied.
        private readonly Dictionary<TopicPartition, Offset> _next = [];

        public void Add(ConsumeResult<byte[]?, byte[]> result)
        {
            _held.Add(result);
            _next[result.TopicPartition] = result.Offset + 1;
        }

        /// <summary>A record moved into the store: committed now, unless a refused one before it holds its partition.</summary>
        public void Moved(ConsumeResult<byte[]?, byte[]> result)
        {
            if (_next.ContainsKey(result.TopicPartition))
            {
                _next[result.TopicPartition] = result.Offset + 1;
            }
            else
            {
                consumer.Commit([new TopicPartitionOffset(result.TopicPartition, result.Offset + 1)]);
            }
        }

        /// <summary>Copies each held record to the end of its partition, waits for the cluster to confirm it, then commits past it.</summary>
        public async ValueTask CopyToTheEndAsync(CancellationToken cancellationToken)
        {
            if (_held.Count == 0)
            {
                return;
            }

            foreach (var result in _held)
            {
                var message = result.Message;
                var refusals = int.TryParse(KafkaEnvelopeCodec.Header(message, KafkaEnvelopeCodec.DrainRefusalsHeader), NumberStyles.None, CultureInfo.InvariantCulture, out var before)
                    ? before + 1
                    : 1;
                var copy = KafkaEnvelopeCodec.CopyForRepublish(
                    message,
                    [
                        new(KafkaEnvelopeCodec.DeadLetterOriginHeader, Origin(result)),
                        new(KafkaEnvelopeCodec.DrainRefusalsHeader, refusals.ToString(CultureInfo.InvariantCulture)),
                    ],
                    added: null);

                // The dead letter's time when it carries no record of its own.
                copy.Timestamp = message.Timestamp.Type == TimestampType.NotAvailable ? Timestamp.Default : new Timestamp(message.Timestamp.UnixTimestampMs, TimestampType.CreateTime);
                await transport._producer!.ProduceAsync(result.TopicPartition, copy, cancellationToken).ConfigureAwait(false);
                Log.DeadLetterCopiedToTheEnd(transport.Logger, result.Topic, result.TopicPartitionOffset.ToString(), refusals);
            }

            consumer.Commit(_next.Select(n => new TopicPartitionOffset(n.Key, n.Value)));
            _held.Clear();
            _next.Clear();
        }
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
    /// the drain reads back), without the retry bookkeeping; completes once the cluster confirmed the copy. A record too
    /// large to copy is dead-lettered without its body, then also without its custom headers, then with only the headers
    /// that say which message it was, then without its key and any of those headers or reason that is itself large, the
    /// reason saying what was left out: a copy refused every time would otherwise be owed for good, holding its partition's
    /// commits (and its consumer lane, or its retry partition) for as long as it runs.
    /// </summary>
    internal async ValueTask DeadLetterAsync(Message<byte[]?, byte[]> message, string queue, string reason, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken)
    {
        var topic = _options.DeadLetterTopicName(queue);
        var copy = DeadLetterCopy(message, queue, reason, headers);
        var leftOut = LeftOut.Nothing;
        while (true)
        {
            try
            {
                await ProduceAsync(topic, copy, cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (MessageRejectedException e) when (e.InnerException is ProduceException<byte[]?, byte[]> { Error.Code: ErrorCode.MsgSizeTooLarge }
                && SmallerDeadLetterCopy(message, queue, reason, headers, ref leftOut, e) is { } smaller)
            {
                copy = smaller;
            }
        }
    }

    /// <summary>What a dead-letter copy refused as too large is made again without, each step leaving out more.</summary>
    private enum LeftOut
    {
        Nothing,
        Body,
        CustomHeaders,
        AllButIdentity,
        Oversized,
    }

    // The last copy keeps a key, a header naming the message, and a reason only up to these sizes: a record written by a
    // client with a larger limit may carry any of them larger than this transport's producer takes.
    private const int MinimalCopyMaxBytes = 1024;
    private const int MinimalCopyMaxReasonChars = 4096;

    /// <summary>
    /// The copy of <paramref name="message"/> with the next thing that makes it smaller left out (what it does not have is
    /// skipped), logged and said in the reason; null once nothing is left to leave out.
    /// </summary>
    private Message<byte[]?, byte[]>? SmallerDeadLetterCopy(
        Message<byte[]?, byte[]> message, string queue, string reason, IReadOnlyDictionary<string, string>? headers, ref LeftOut leftOut, MessageRejectedException refusal)
    {
        var topic = _options.DeadLetterTopicName(queue);
        var body = message.Value?.Length ?? 0;
        if (leftOut < LeftOut.Body && body > 0)
        {
            leftOut = LeftOut.Body;
            Log.DeadLetterBodyLeftOut(Logger, refusal, topic, body);
            return DeadLetterCopy(Without(message, _ => true), queue, string.Create(CultureInfo.InvariantCulture, $"{reason} (its body of {body} bytes was left out: {refusal.Message})"), headers);
        }

        var bodyLeftOut = body > 0 ? string.Create(CultureInfo.InvariantCulture, $"its body of {body} bytes and ") : "";
        var custom = message.Headers?.Where(h => !IsKeptWithoutCustomHeaders(h.Key)).ToList() ?? [];
        if (leftOut < LeftOut.CustomHeaders && custom.Count > 0)
        {
            leftOut = LeftOut.CustomHeaders;
            var names = string.Join(", ", custom.Select(h => string.Create(CultureInfo.InvariantCulture, $"{h.Key} ({h.GetValueBytes()?.Length ?? 0} bytes)")));
            Log.DeadLetterHeadersLeftOut(Logger, refusal, topic, names);
            return DeadLetterCopy(
                Without(message, IsKeptWithoutCustomHeaders), queue, $"{reason} ({bodyLeftOut}its headers {names} were left out: {refusal.Message})", headers);
        }

        if (leftOut < LeftOut.AllButIdentity)
        {
            leftOut = LeftOut.AllButIdentity;

            // No names: a header's name may be what is large.
            var dropped = message.Headers?.Where(h => !IsIdentity(h.Key)).ToList() ?? [];
            var what = string.Create(
                CultureInfo.InvariantCulture,
                $"all its headers but those naming the message ({dropped.Count} headers of {dropped.Sum(h => h.Key.Length + (h.GetValueBytes()?.Length ?? 0))} bytes, and the dead letter's own)");
            Log.DeadLetterHeadersLeftOut(Logger, refusal, topic, what);
            return DeadLetterCopy(Without(message, IsIdentity), queue, $"{reason} ({bodyLeftOut}{what} were left out: {refusal.Message})", headers: null);
        }

        if (leftOut < LeftOut.Oversized)
        {
            leftOut = LeftOut.Oversized;
            return MinimalDeadLetterCopy(message, queue, reason, bodyLeftOut, refusal);
        }

        return null;
    }

    /// <summary>
    /// The last copy: no key (its hash in the reason), and only the headers naming the message that are small, with the
    /// reason cut short; null when none of them is large, so nothing is left to leave out. Without a large identity header
    /// the drain reads it as undecodable, which still stores it with the reason: better than owing it for good.
    /// </summary>
    private Message<byte[]?, byte[]>? MinimalDeadLetterCopy(Message<byte[]?, byte[]> message, string queue, string reason, string bodyLeftOut, MessageRejectedException refusal)
    {
        var key = message.Key?.Length ?? 0;
        var large = message.Headers?.Where(h => IsIdentity(h.Key) && (h.GetValueBytes()?.Length ?? 0) > MinimalCopyMaxBytes).ToList() ?? [];
        if (key <= MinimalCopyMaxBytes && large.Count == 0 && reason.Length <= MinimalCopyMaxReasonChars)
        {
            return null;
        }

        var what = new List<string> { "all its headers but those naming the message" };
        if (key > MinimalCopyMaxBytes)
        {
            what.Add(string.Create(CultureInfo.InvariantCulture, $"its key of {key} bytes (SHA-256 {Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(message.Key!))})"));
        }

        what.AddRange(large.Select(h => string.Create(CultureInfo.InvariantCulture, $"its header {h.Key} of {h.GetValueBytes().Length} bytes")));
        if (reason.Length > MinimalCopyMaxReasonChars)
        {
            what.Add(string.Create(CultureInfo.InvariantCulture, $"its reason past {MinimalCopyMaxReasonChars} of {reason.Length} characters"));
            reason = reason[..MinimalCopyMaxReasonChars];
        }

        var leftOut = string.Join(", ", what);
        Log.DeadLetterHeadersLeftOut(Logger, refusal, _options.DeadLetterTopicName(queue), leftOut);
        var minimal = Without(message, name => IsIdentity(name) && !large.Exists(h => h.Key == name));
        minimal.Key = key > MinimalCopyMaxBytes ? null : message.Key;
        return DeadLetterCopy(minimal, queue, $"{reason} ({bodyLeftOut}{leftOut} were left out: {refusal.Message})", headers: null);
    }

    /// <summary>The record without its body, with only the headers <paramref name="kept"/> keeps.</summary>
    private static Message<byte[]?, byte[]> Without(Message<byte[]?, byte[]> message, Func<string, bool> kept)
    {
        var headers = new Headers();
        foreach (var header in message.Headers ?? [])
        {
            if (kept(header.Key))
            {
                headers.Add(header.Key, header.GetValueBytes());
            }
        }

        return new Message<byte[]?, byte[]> { Key = message.Key, Value = [], Headers = headers, Timestamp = message.Timestamp };
    }

    /// <summary>Herald's bookkeeping, the CloudEvents attributes and Herald's own, and a plain record's type and source.</summary>
    private static bool IsKeptWithoutCustomHeaders(string name) =>
        name.StartsWith("x-herald-", StringComparison.Ordinal)
        || IsIdentity(name)
        || name is KafkaEnvelopeCodec.Prefix + "dataschema" or KafkaEnvelopeCodec.Prefix + "datacontenttype" or KafkaEnvelopeCodec.Prefix + "subject"
            or KafkaEnvelopeCodec.Prefix + "correlationid" or KafkaEnvelopeCodec.Prefix + "causationid" or KafkaEnvelopeCodec.Prefix + "userid"
            or KafkaEnvelopeCodec.Prefix + "partitionkey";

    /// <summary>The headers without which the dead letter would not decode as the message it is.</summary>
    private static bool IsIdentity(string name) =>
        name is KafkaEnvelopeCodec.Prefix + "specversion" or KafkaEnvelopeCodec.Prefix + "id" or KafkaEnvelopeCodec.Prefix + "type"
            or KafkaEnvelopeCodec.Prefix + "source" or KafkaEnvelopeCodec.Prefix + "time" or KafkaEnvelopeCodec.ContentTypeHeader
            or KafkaEnvelopeCodec.PlainTypeHeader or KafkaEnvelopeCodec.PlainSourceHeader or KafkaEnvelopeCodec.AttemptHeader;

    private static Message<byte[]?, byte[]> DeadLetterCopy(Message<byte[]?, byte[]> message, string queue, string reason, IReadOnlyDictionary<string, string>? headers) =>
        KafkaEnvelopeCodec.CopyForRepublish(
            message,
            [
                new(KafkaEnvelopeCodec.AttemptHeader, KafkaEnvelopeCodec.Attempt(message).ToString(CultureInfo.InvariantCulture)),
                new(KafkaEnvelopeCodec.OriginQueueHeader, queue),
                new(KafkaEnvelopeCodec.ReasonHeader, reason),
                new(KafkaEnvelopeCodec.DueHeader, null),
                new(KafkaEnvelopeCodec.TargetHeader, null),
            ],
            headers);

    /// <inheritdoc />
    protected override void ValidateQueueName(string queue, string parameter) => ValidateName(queue, parameter);
}
