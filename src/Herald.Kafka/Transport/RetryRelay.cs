using System.Collections.Concurrent;
using System.Globalization;
using Confluent.Kafka;
using Microsoft.Extensions.Logging;

namespace Herald.Kafka.Transport;

/// <summary>
/// Moves the records of one retry topic back to their target topic when they are due: Kafka has no per-message delay,
/// so a delayed nack (or delayed send) waits here instead of holding up its partition. The relay is a consumer group of
/// its own (every process relaying the topic shares it). A partition whose oldest record is not due yet is paused and
/// rewound to it, and resumed when it is due; records behind it in the same partition wait with it (head of line), which
/// costs at most the difference between their delays. A record is committed only after its copy was confirmed.
/// </summary>
internal sealed class RetryRelay : IAsyncDisposable
{
    private static readonly TimeSpan PollTimeout = TimeSpan.FromMilliseconds(50);

    private readonly KafkaTransport _transport;
    private readonly ILogger _logger;
    private IConsumer<byte[]?, byte[]> _consumer = null!;
    private readonly ConcurrentDictionary<TopicPartition, DateTimeOffset> _heldUntil = new();
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

    /// <summary>The partitions held at a record that is not due yet (paused).</summary>
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
            _consumer = _transport.BuildConsumer(_transport.Options.GroupIdPrefix + Topic)
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

            _consumer.Close();
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
        var due = KafkaEnvelopeCodec.Header(message, KafkaEnvelopeCodec.DueHeader) is { } text
            && long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var ms)
            && ms is >= 0 and <= 253402300799999
            ? DateTimeOffset.FromUnixTimeMilliseconds(ms)
            : (DateTimeOffset?)null;
        if (string.IsNullOrEmpty(target))
        {
            // Not Herald's: nowhere to send it. Skipped and logged, so one stray record cannot wedge the partition.
            Log.RetryRecordWithoutTarget(_logger, Topic, result.TopicPartitionOffset.ToString());
            Commit(result);
            return;
        }

        if (due is { } at && at > _transport.TimeProvider.GetUtcNow())
        {
            // Not due: hold the partition at this record and read it again once it is due.
            var partition = result.TopicPartition;
            _consumer.Pause([partition]);
            _consumer.Seek(result.TopicPartitionOffset);
            _heldUntil[partition] = at;
            return;
        }

        try
        {
            var copy = KafkaEnvelopeCodec.CopyForRepublish(message, [new(KafkaEnvelopeCodec.DueHeader, null), new(KafkaEnvelopeCodec.TargetHeader, null)], added: null);
            _transport.ProduceAsync(target, copy, _stopping.Token).AsTask().GetAwaiter().GetResult();
            Commit(result);
        }
        catch (Exception e) when (e is KafkaException or OperationCanceledException)
        {
            // Not committed: rewound and tried again (at-least-once), after a pause when it was the cluster.
            Log.RelayFailed(_logger, e, Topic, target);
            _consumer.Seek(result.TopicPartitionOffset);
        }
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
