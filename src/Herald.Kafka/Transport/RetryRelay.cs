using System.Collections.Concurrent;
using System.Globalization;
using Confluent.Kafka;
using Confluent.Kafka.Admin;
using Herald.Kafka.Diagnostics;
using Microsoft.Extensions.Logging;

namespace Herald.Kafka.Transport;

/// <summary>
/// Moves the records of one retry topic back to their target topic when they are due: Kafka has no per-message delay,
/// so a delayed nack (or delayed send) waits here instead of holding up its partition. The relay is a consumer group of
/// its own (every process relaying the topic shares it). A partition whose oldest record is not due yet is paused and
/// rewound to it, and resumed when it is due; records behind it in the same partition wait with it (head of line), which
/// costs at most the difference between their delays. A record is committed only after its copy was confirmed; one its
/// target will never take goes to the dead letters with the reason, and a failure that may pass (the cluster) holds the
/// partition at the record for a back-off.
/// </summary>
internal sealed class RetryRelay : IAsyncDisposable
{
    private static readonly TimeSpan PollTimeout = TimeSpan.FromMilliseconds(50);

    // Polly.Core is not among the central packages, and an adapter adds only its client library: a doubling back-off
    // by hand, as the outbox relay's.
    private static readonly TimeSpan MinBackoff = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);

    /// <summary>How far past the longest delay a due time may lie and still be taken for the writer's clock being ahead (as on SQS).</summary>
    private static readonly TimeSpan DueClockSkew = TimeSpan.FromDays(1);

    private readonly KafkaTransport _transport;
    private readonly ILogger _logger;
    private IConsumer<byte[]?, byte[]> _consumer = null!;
    private readonly ConcurrentDictionary<TopicPartition, DateTimeOffset> _heldUntil = new();

    // The last back-off of each partition whose relay failed (poll thread only).
    private readonly Dictionary<TopicPartition, TimeSpan> _backoff = [];
    private List<TopicPartition>? _assignedInPoll;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task _running;

    public RetryRelay(KafkaTransport transport, string retryTopic, ILogger logger)
    {
        _transport = transport;
        _logger = logger;
        Topic = retryTopic;

        // The client is made on the relay's own thread: making one takes milliseconds, which the ConsumeAsync that
        // starts the relay would otherwise wait for before its own consumer joins the group.
        _running = Task.Factory.StartNew(Run, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    public string Topic { get; }

    /// <summary>The partitions held (paused) at a record that is not due yet, or whose relay failed and waits out a back-off.</summary>
    internal IReadOnlyCollection<TopicPartition> Held => [.. _heldUntil.Keys];

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        await _running.ConfigureAwait(false);
        _stopping.Dispose();
    }

    private void Run()
    {
        try
        {
            _consumer = _transport.BuildOwnTopicConsumer(_transport.Options.GroupIdPrefix + Topic)
                .SetPartitionsAssignedHandler((_, assigned) => (_assignedInPoll ??= []).AddRange(assigned))
                .SetPartitionsRevokedHandler((_, revoked) => Forget(revoked.Select(p => p.TopicPartition)))
                .SetPartitionsLostHandler((_, lost) => Forget(lost.Select(p => p.TopicPartition)))
                .SetErrorHandler((_, error) => Log.ClientError(_logger, Topic, error.Code, error.Reason))
                .Build();
        }
#pragma warning disable CA1031 // Logged: the relay thread must end cleanly so disposal returns.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.PollFailed(_logger, e, Topic);
            return;
        }

        try
        {
            _consumer.Subscribe(Topic);
            while (!_stopping.IsCancellationRequested)
            {
                ResumeAssigned();
                ResumeDue();
                if (KafkaTransport.Poll(_consumer, PollTimeout, _logger, Topic) is { } result)
                {
                    Relay(result);
                }
            }

            KafkaTransport.LeaveGroup(_consumer, _logger, Topic);
        }
#pragma warning disable CA1031 // Logged: the relay thread must end cleanly so disposal returns.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.PollFailed(_logger, e, Topic);
        }
        finally
        {
            _consumer.Dispose();
        }
    }

    private void Relay(ConsumeResult<byte[]?, byte[]> result)
    {
        var message = result.Message;
        var target = KafkaEnvelopeCodec.Header(message, KafkaEnvelopeCodec.TargetHeader);

        // Herald names a valid target on every record it puts here: one without is not Herald's, and is dead-lettered at
        // once whatever its due time says; held until then it would hold its partition (and Herald's records behind it) up
        // to the year 9999.
        var refusal = string.IsNullOrEmpty(target)
            ? $"It names no target topic (no {KafkaEnvelopeCodec.TargetHeader} header of UTF-8 text)."
            : KafkaTransport.IsValidTopicName(target) ? null : $"Its target '{target}' is not a valid Kafka topic name.";
        var (due, malformedDue) = Due(message);
        refusal ??= malformedDue;
        var now = _transport.TimeProvider.GetUtcNow();

        // Nor is a due time further away than any delay Herald writes (the transport's MaxDelay, and a day for the writer's
        // clock being ahead): held until then (the year 9999, say), it would hold its partition and Herald's records behind it.
        if (refusal is null && due is { } far && far - now > KafkaTransport.MaxDelay + DueClockSkew)
        {
            refusal = $"Its {KafkaEnvelopeCodec.DueHeader} header ({far.ToString("O", CultureInfo.InvariantCulture)}) is more than {KafkaTransport.MaxDelay.Days} days away, beyond the longest delay Herald writes: the due time is malformed.";
        }

        if (refusal is null && due is { } at && at > now)
        {
            // Not due: hold the partition at this record and read it again once it is due.
            Hold(result, at);
            return;
        }

        // Nothing leaves this method: an exception out of it would end the poll loop, and with it every delayed
        // delivery through this retry topic.
        try
        {
            if (refusal is not null)
            {
                // Its own dead-letter topic (its target's would not be a name either, nor need it be a Herald queue's).
                DeadLetter(result, Topic, refusal, null);
            }
            else
            {
                Copy(result, target!);
            }

            Commit(result);
            _backoff.Remove(result.TopicPartition);
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
            // Stopping: not committed, so it is relayed after the restart.
        }
#pragma warning disable CA1031 // Logged and counted; the record is tried again after a back-off.
        catch (Exception e)
#pragma warning restore CA1031
        {
            // Not committed: held for a back-off and tried again (at-least-once), so a cluster that is down costs a
            // retry now and then, not a tight loop.
            var backoff = NextBackoff(result.TopicPartition);
            if (e is DeadLetterFailedException dead)
            {
                // Nowhere to put it (a dead-letter topic missing while CreateTopics is off): kept, and the operator told what to create.
                Log.RelayDeadLetterFailed(_logger, dead.InnerException!, Topic, result.TopicPartitionOffset.ToString(), dead.Reason, dead.DeadLetterTopic, backoff);
            }
            else
            {
                Log.RelayFailed(_logger, e, Topic, target ?? string.Empty, backoff);
            }

            KafkaRelayMetrics.CountFailure(Topic, target ?? string.Empty, e is DeadLetterFailedException ? e.InnerException! : e);
            Hold(result, _transport.TimeProvider.GetUtcNow() + backoff);
        }
    }

    /// <summary>
    /// The due time of a record: null without an x-herald-due header (due at once). Herald writes it as Unix milliseconds in
    /// digits, so a header that is not that, in the calendar's range, is not Herald's or is corrupt: the refusal says so, and
    /// the record is dead-lettered at once rather than relayed as if it were due.
    /// </summary>
    private static (DateTimeOffset? Due, string? Refusal) Due(Message<byte[]?, byte[]> message)
    {
        if (message.Headers is null || !message.Headers.TryGetLastBytes(KafkaEnvelopeCodec.DueHeader, out var bytes))
        {
            return (null, null);
        }

        if (KafkaEnvelopeCodec.TryParseUnixMilliseconds(bytes, out var ms))
        {
            return (DateTimeOffset.FromUnixTimeMilliseconds(ms), null);
        }

        var text = KafkaEnvelopeCodec.Header(message, KafkaEnvelopeCodec.DueHeader);

        // Cut, as a header may be as long as the record: the dead letter keeps the record, headers and all.
        var value = text is null ? "not UTF-8 text" : text.Length <= 64 ? $"'{text}'" : $"'{text[..64]}...'";
        return (null, $"Its {KafkaEnvelopeCodec.DueHeader} header ({value}) is not a time in Unix milliseconds up to the year 9999: the due time is malformed.");
    }

    /// <summary>
    /// Produces the copy of a due record to its target; one the target will never take (refused by the cluster, a
    /// missing topic) goes to the dead letters with the reason instead, so it cannot wedge its partition.
    /// </summary>
    private void Copy(ConsumeResult<byte[]?, byte[]> result, string target)
    {
        var message = result.Message;
        try
        {
            var copy = KafkaEnvelopeCodec.CopyForRepublish(message, [new(KafkaEnvelopeCodec.DueHeader, null), new(KafkaEnvelopeCodec.TargetHeader, null)], added: null);
            _transport.ProduceAsync(target, copy, _stopping.Token).AsTask().GetAwaiter().GetResult();
        }
        catch (Exception e) when (IsPermanent(e))
        {
            DeadLetter(result, target, $"Relaying it to '{target}' failed for good: {e.Message}", e);
        }
    }

    private void DeadLetter(ConsumeResult<byte[]?, byte[]> result, string queue, string reason, Exception? failure)
    {
        try
        {
            _transport.DeadLetterAsync(result.Message, queue, reason, headers: null, _stopping.Token).AsTask().GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is not OperationCanceledException || !_stopping.IsCancellationRequested)
        {
            throw new DeadLetterFailedException(_transport.Options.DeadLetterTopicName(queue), reason, e);
        }

        Log.RelayRefused(_logger, failure, Topic, result.TopicPartitionOffset.ToString(), reason);
    }

    /// <summary>A record that cannot be relayed, and whose dead-letter copy failed too: the relay keeps it and says why.</summary>
    private sealed class DeadLetterFailedException(string deadLetterTopic, string reason, Exception inner) : Exception(reason, inner)
    {
        public string DeadLetterTopic { get; } = deadLetterTopic;

        public string Reason { get; } = reason;
    }

    /// <summary>Whether relaying would fail the same way every time: the cluster refused the record, or the target cannot be made.</summary>
    private static bool IsPermanent(Exception e) => e switch
    {
        // MessageRejectedException (too large, invalid), or a target that does not exist while CreateTopics is off.
        HeraldException => true,
        CreateTopicsException created => created.Results.Any(r => IsPermanent(r.Error.Code)),
        KafkaException kafka => IsPermanent(kafka.Error.Code),
        _ => false,
    };

    private static bool IsPermanent(ErrorCode code) => code is ErrorCode.TopicException or ErrorCode.MsgSizeTooLarge or ErrorCode.InvalidMsg
        or ErrorCode.RecordListTooLarge or ErrorCode.InvalidRecord or ErrorCode.TopicAuthorizationFailed or ErrorCode.PolicyViolation
        or ErrorCode.InvalidPartitions or ErrorCode.InvalidReplicationFactor or ErrorCode.InvalidReplicaAssignment or ErrorCode.InvalidConfig;

    /// <summary>Pauses the record's partition and rewinds it to the record, to be read again at <paramref name="until"/>.</summary>
    private void Hold(ConsumeResult<byte[]?, byte[]> result, DateTimeOffset until)
    {
        var partition = result.TopicPartition;
        try
        {
            _consumer.Pause([partition]);
            _consumer.Seek(result.TopicPartitionOffset);
            _heldUntil[partition] = until;
        }
        catch (KafkaException e)
        {
            // The partition is no longer this client's: its next owner reads from the committed offset, this record included.
            Log.ClientError(_logger, Topic, e.Error.Code, e.Error.Reason);
        }
    }

    /// <summary>The next back-off of a partition whose relay failed: doubling from 100 ms up to 30 s, reset by a success.</summary>
    private TimeSpan NextBackoff(TopicPartition partition)
    {
        var next = _backoff.TryGetValue(partition, out var last) ? TimeSpan.FromTicks(Math.Min(last.Ticks * 2, MaxBackoff.Ticks)) : MinBackoff;
        _backoff[partition] = next;
        return next;
    }

    /// <summary>
    /// Resumes the partitions assigned during the last poll. librdkafka keeps a partition's pause across its revocation: one
    /// this relay gave up while it held a record there would come back paused, with nothing here left to resume it.
    /// </summary>
    private void ResumeAssigned()
    {
        if (KafkaTransport.TakeAssigned(_consumer, ref _assignedInPoll) is { } assigned)
        {
            _consumer.Resume(assigned);
        }
    }

    private void ResumeDue()
    {
        if (_heldUntil.IsEmpty)
        {
            return;
        }

        var now = _transport.TimeProvider.GetUtcNow();
        var due = _heldUntil.Where(h => h.Value <= now).Select(h => h.Key).ToList();
        foreach (var partition in due)
        {
            _heldUntil.TryRemove(partition, out _);
        }

        if (due.Count > 0)
        {
            _consumer.Resume(due);
        }
    }

    private void Forget(IEnumerable<TopicPartition> partitions)
    {
        foreach (var partition in partitions)
        {
            _heldUntil.TryRemove(partition, out _);
            _backoff.Remove(partition);
        }
    }

    private void Commit(ConsumeResult<byte[]?, byte[]> result)
    {
        try
        {
            _consumer.Commit([new TopicPartitionOffset(result.TopicPartition, result.Offset + 1)]);
        }
        catch (KafkaException e)
        {
            // The copy went out; if this commit is lost the relay sends it again after a restart (at-least-once; the inbox dedups).
            Log.CommitFailed(_logger, Topic, e.Error.Code, e.Error.Reason);
        }
    }
}
