using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Kafka.Transport;
using Herald.Messages;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Kafka.Tests;

/// <summary>
/// Copies the cluster refuses: a relayed record, a nack's redelivery (and a start-time lookup). The refusal is injected into
/// the mock's next request of its kind, whoever sends it, so these tests run alone (<see cref="ProduceErrorsCollection"/>).
/// </summary>
[Collection(nameof(ProduceErrorsCollection))]
public sealed class RefusedCopyTests : KafkaTestBase
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    // Kafka's MSG_SIZE_TOO_LARGE: the cluster refuses one record (KafkaTransport.ProduceAsync throws MessageRejectedException).
    private const int MsgSizeTooLarge = 10;

    private readonly ITestOutputHelper _output;

    public RefusedCopyTests(ITestOutputHelper output)
    {
        _output = output;
        LoggerFactory = new TestOutputLoggerFactory(output);
    }

    [Fact]
    public async Task Relay_OfARecordTheClusterRefuses_DeadLettersItWithItsReason_AndStillRelaysTheDelayedRecordsBehindIt()
    {
        // The refusal escaped the relay's loop, which stopped for good: every delayed delivery through the topic with it.
        var transport = await CreateTransportAsync();
        var queue = Name("relay-refused");
        var handled = new ConcurrentDictionary<Guid, byte>();
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            handled.TryAdd(d.Envelope.MessageId, 0);
            return ValueTask.CompletedTask;
        }));
        var probe = NewEnvelope();
        await transport.SendAsync(queue, probe);
        await Eventually.UntilAsync(() => handled.ContainsKey(probe.MessageId), "the consumer reads", Deadline);

        // Both wait in one retry partition (one key); the next record produced, the relay's copy of the first once it is
        // due, is refused.
        var refused = NewEnvelope("k");
        var behind = NewEnvelope("k");
        await transport.SendAsync(queue, refused, new SendOptions { Delay = TimeSpan.FromMilliseconds(1500) });
        await transport.SendAsync(queue, behind, new SendOptions { Delay = TimeSpan.FromMilliseconds(2000) });
        MockCluster.PushProduceErrors(MsgSizeTooLarge);

        await Eventually.UntilAsync(() => handled.ContainsKey(behind.MessageId), "the delayed record behind the refused one is relayed and handled", Deadline);
        Assert.False(handled.ContainsKey(refused.MessageId));
        await Eventually.UntilAsync(() => EndOffsets(queue + ".dead-letter") == 1, "the refused record in the dead-letter topic", Deadline);
        var moved = new List<NativeDeadLetter>();
        Assert.Equal(1, await transport.DrainDeadLettersAsync(queue, (d, _) => { moved.Add(d); return ValueTask.CompletedTask; }));
        var deadLetter = Assert.Single(moved);
        Assert.Equal(refused.MessageId, deadLetter.Envelope.MessageId);
        Assert.Equal(queue, deadLetter.Queue);
        Assert.Contains("refused", deadLetter.Reason, StringComparison.Ordinal);
        await Eventually.UntilAsync(() => Uncommitted(queue + ".retry", queue + ".retry") == 0, "the retry topic committed past both", Deadline);
    }

    /// <summary>
    /// A delayed publish to a bound topic whose relay copy the cluster refused reached none of the queues bound to it: its
    /// dead letter names the topic, moves into the store once (whichever bound queue drains), and retried there it reaches
    /// every bound queue exactly once, as the publish would have.
    /// </summary>
    [Fact]
    public async Task Relay_OfADelayedPublishToABoundTopicTheClusterRefuses_IsDeadLetteredOnce_AndItsRetryReachesEachBoundQueueOnce()
    {
        var transport = await CreateTransportAsync();
        var topic = Name("relay-refused-topic");
        string[] queues = [Name("relay-refused-a"), Name("relay-refused-b")];
        var handled = new ConcurrentDictionary<(string Queue, Guid Id), int>();
        foreach (var queue in queues)
        {
            await transport.BindAsync(topic, queue);
            Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
            {
                handled.AddOrUpdate((queue, d.Envelope.MessageId), 1, (_, n) => n + 1);
                return ValueTask.CompletedTask;
            }));
        }

        var probe = NewEnvelope("k");
        await transport.PublishAsync(topic, probe);
        await Eventually.UntilAsync(() => queues.All(q => handled.ContainsKey((q, probe.MessageId))), "both queues read the topic", Deadline);

        var refused = NewEnvelope("k");
        await transport.PublishAsync(topic, refused, new SendOptions { Delay = TimeSpan.FromMilliseconds(1500) });
        MockCluster.PushProduceErrors(MsgSizeTooLarge);
        await Eventually.UntilAsync(() => EndOffsets(topic + ".dead-letter") == 1, "the refused copy in the topic's dead-letter topic", Deadline);
        var moved = new List<NativeDeadLetter>();
        Assert.Equal(1, await transport.DrainDeadLettersAsync(queues[0], (d, _) => { moved.Add(d); return ValueTask.CompletedTask; }));
        Assert.Equal(0, await transport.DrainDeadLettersAsync(queues[1], (d, _) => { moved.Add(d); return ValueTask.CompletedTask; }));
        var deadLetter = Assert.Single(moved);
        Assert.Equal(topic, deadLetter.Queue);
        Assert.DoesNotContain(handled.Keys, h => h.Id == refused.MessageId);

        // Retried as DeadLetterManager does (to the queue the dead letter names), then a record behind it in its partition.
        await transport.SendAsync(deadLetter.Queue, deadLetter.Envelope);
        await Eventually.UntilAsync(() => queues.All(q => handled.ContainsKey((q, refused.MessageId))), "both queues handle the retry", Deadline);
        var behind = NewEnvelope("k");
        await transport.PublishAsync(topic, behind);
        await Eventually.UntilAsync(() => queues.All(q => handled.ContainsKey((q, behind.MessageId))), "both queues read past the retry", Deadline);
        Assert.All(queues, q => Assert.Equal(1, handled.GetValueOrDefault((q, refused.MessageId))));
    }

    [Fact]
    public async Task Nack_WhoseCopyTheClusterRefusedOnce_IsCopiedAgain_SoTheMessageComesBack_AndItsPartitionCommits()
    {
        // The failed copy left the offset settled but not complete: never handed back, and the partition's commits held
        // behind it for good while this member owned it.
        var transport = await CreateTransportAsync();
        var queue = Name("nack-refused");
        MockCluster.CreateTopic(queue, 1);
        var first = NewEnvelope("k");
        var second = NewEnvelope("k");
        await transport.SendAsync(queue, first);
        await transport.SendAsync(queue, second);

        var deliveries = new ConcurrentQueue<(Guid Id, int Attempt)>();
        var nackFailed = new TaskCompletionSource<Exception>(TaskCreationOptions.RunContinuationsAsynchronously);
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (d, ct) =>
        {
            deliveries.Enqueue((d.Envelope.MessageId, d.Envelope.DeliveryAttempt));
            if (d.Envelope.MessageId == first.MessageId && d.Envelope.DeliveryAttempt == 1)
            {
                // What SettleStep does for a Redeliver verdict; the cluster refuses this one copy.
                MockCluster.PushProduceErrors(MsgSizeTooLarge);
                try
                {
                    await d.NackAsync(TimeSpan.FromMilliseconds(200), ct);
                }
                catch (Exception e)
                {
                    nackFailed.TrySetResult(e);
                    throw;
                }
            }
        }));

        Assert.IsType<MessageRejectedException>(await nackFailed.Task.WaitAsync(Deadline));
        try
        {
            await Eventually.UntilAsync(() => deliveries.Contains((first.MessageId, 2)), "the message whose nack failed comes back", Deadline);
            await Eventually.UntilAsync(() => Uncommitted(queue, queue) == 0, "the partition committed past both", Deadline);
        }
        finally
        {
            _output.WriteLine($"deliveries: {string.Join(", ", deliveries.Select(d => $"{(d.Id == first.MessageId ? "first" : "second")}#{d.Attempt}"))}");
        }

        Assert.Contains((second.MessageId, 1), deliveries);
        Assert.Equal(2, deliveries.Count(d => d.Id == first.MessageId));
    }

    [Fact]
    public async Task Send_WithDeliveryReportsTurnedOffByTheProducerHook_StillWaitsForTheCluster_AndThrowsWhenItRefuses()
    {
        // The hook could turn delivery reports off: a send then completed before the cluster answered, and one the cluster
        // refused was lost without an error (the outbox marked it sent).
        var transport = await CreateTransportAsync(o => o.ConfigureProducer = c => c.EnableDeliveryReports = false);
        var queue = Name("no-reports");
        await transport.DeclareQueueAsync(queue);
        MockCluster.PushProduceErrors(MsgSizeTooLarge);
        await Assert.ThrowsAsync<MessageRejectedException>(async () => await transport.SendAsync(queue, NewEnvelope()));
    }

    [Fact]
    public async Task DeadLetter_OfARecordTooLargeToCopy_GoesToTheDeadLetterTopicWithoutItsBody_AndTheMessagesBehindItAreHandled()
    {
        // The dead-letter copy the producer refused as too large was owed for good: made again every 10 s, holding the
        // lane (every key on it) and the partition's commits for as long as the consumer ran.
        var poison = NewEnvelope("k", "\"" + new string('x', 200_000) + "\"");
        var deadLetter = await DeadLetterTooLargeToCopyAsync("dead-letter-too-large", poison);
        Assert.True(deadLetter.Envelope.Body.IsEmpty);
        Assert.StartsWith("poison (its body of ", deadLetter.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DeadLetter_OfARecordWhoseHeadersAloneAreTooLargeToCopy_GoesToTheDeadLetterTopicWithoutThem_AndTheMessagesBehindItAreHandled()
    {
        // Only the body was left out of a copy refused as too large, so one whose headers were what was large was refused
        // again (or, its body empty, not retried at all): owed for good, holding the lane and the partition's commits.
        var poison = NewEnvelope("k", "") with
        {
            CorrelationId = "c-1",
            Headers = new Dictionary<string, string> { ["big"] = new string('x', 200_000), ["small"] = "s" },
        };
        var deadLetter = await DeadLetterTooLargeToCopyAsync("dead-letter-headers-too-large", poison);
        Assert.Equal("c-1", deadLetter.Envelope.CorrelationId);
        Assert.False(deadLetter.Envelope.Headers.ContainsKey("big"));
        Assert.False(deadLetter.Envelope.Headers.ContainsKey("small"));
        Assert.StartsWith("poison (its headers ce_big (200000 bytes), ce_small (1 bytes) were left out", deadLetter.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DeadLetter_OfARecordWhoseOwnAttributesAreTooLargeToCopy_GoesToTheDeadLetterTopicWithOnlyWhatNamesIt()
    {
        // Neither the body nor the custom headers were what was large: the copy was owed for good.
        var poison = NewEnvelope("k", "{\"a\":1}") with
        {
            CorrelationId = new string('c', 200_000),
            Headers = new Dictionary<string, string> { ["small"] = "s" },
        };
        var deadLetter = await DeadLetterTooLargeToCopyAsync("dead-letter-attributes-too-large", poison);
        Assert.Equal(poison.MessageType, deadLetter.Envelope.MessageType);
        Assert.NotEqual(poison.CorrelationId, deadLetter.Envelope.CorrelationId);
        Assert.StartsWith("poison (its body of 7 bytes and all its headers but those naming the message (", deadLetter.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DeadLetter_OfARecordWhoseKeyIsTooLargeToCopy_GoesToTheDeadLetterTopicWithoutIt_ItsHashInTheReason()
    {
        // Every smaller copy kept the key: one whose key was what was large was refused each time and owed for good,
        // holding the partition's commits for as long as the consumer ran.
        var poison = NewEnvelope(new string('k', 200_000), "{\"a\":1}");
        var deadLetter = await DeadLetterTooLargeToCopyAsync("dead-letter-key-too-large", poison);
        Assert.Equal(poison.MessageType, deadLetter.Envelope.MessageType);
        Assert.Null(deadLetter.Envelope.PartitionKey);
        Assert.StartsWith("poison (its body of 7 bytes and all its headers but those naming the message, its key of 200000 bytes (SHA-256 ", deadLetter.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DeadLetter_OfARecordWhoseTypeIsTooLargeToCopy_GoesToTheDeadLetterTopicWithoutIt_AndIsStoredAsUndecodable()
    {
        // A header naming the message was kept by every smaller copy: one that was itself what was large was owed for good.
        var poison = NewEnvelope("k") with { MessageType = new string('t', 200_000) };
        var deadLetter = await DeadLetterTooLargeToCopyAsync("dead-letter-type-too-large", poison, decodable: false);
        Assert.StartsWith("poison (its body of 2 bytes and all its headers but those naming the message, its header ce_type of 200000 bytes were left out", deadLetter.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DeadLetter_WithAReasonTooLargeToCopy_GoesToTheDeadLetterTopicWithTheReasonCutShort()
    {
        // The reason (a handler's exception message) was kept whole by every smaller copy: one too large was owed for good.
        var poison = NewEnvelope("k");
        var deadLetter = await DeadLetterTooLargeToCopyAsync("dead-letter-reason-too-large", poison, reason: new string('r', 200_000));
        Assert.Equal(poison.MessageType, deadLetter.Envelope.MessageType);
        Assert.StartsWith(new string('r', 4096) + " (its body of 2 bytes and all its headers but those naming the message, its reason past 4096 of 200000 characters were left out", deadLetter.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task StartPosition_Timestamp_WhoseLookupFailed_IsLookedUpAgainByTheResumedClient_NotReadFromTheBeginning()
    {
        // The poll-loop resume of 6026-6028: a partition whose start-time lookup failed (taking the poll loop down) must be
        // looked up again by the new client, not taken as started and read from the committed offsets, of which a new
        // group has none (the reset policy's beginning: the whole backlog). A start in the future is where the mock and a
        // real cluster agree (the log end), so this holds on both.
        var logs = new TestOutputLogger(Microsoft.Extensions.Logging.LogLevel.Information);
        LoggerFactory = new Microsoft.Extensions.Logging.LoggerFactory([logs]);
        var queue = Name("from-time-resumed");
        var writer = await CreateTransportAsync();
        var backlog = NewEnvelope();
        await writer.SendAsync(queue, backlog);
        var reader = await CreateTransportAsync(o =>
        {
            o.StartPosition = KafkaStartPosition.Timestamp;
            o.StartTimestamp = DateTimeOffset.UtcNow.AddDays(1);
        });

        var failed = logs.WhenLoggedAsync("resumes polling in");
        var assigned = logs.WhenLoggedAsync("was given partitions");
        MockCluster.PushRequestErrors(ListOffsets, TopicAuthorizationFailed);
        var seen = new ConcurrentQueue<Guid>();
        Own(await reader.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            seen.Enqueue(d.Envelope.MessageId);
            return ValueTask.CompletedTask;
        }));
        await failed.WaitAsync(Deadline);
        await assigned.WaitAsync(Deadline);

        var fresh = NewEnvelope();
        await writer.SendAsync(queue, fresh);
        await Eventually.UntilAsync(() => seen.Contains(fresh.MessageId), "the message sent after the start", Deadline);
        Assert.Equal([fresh.MessageId], seen);
    }

    // Kafka's ListOffsets API (what a start-time lookup sends) and TOPIC_AUTHORIZATION_FAILED (an answer it does not retry).
    private const short ListOffsets = 2;
    private const int TopicAuthorizationFailed = 29;

    /// <summary>
    /// Has <paramref name="poison"/>, written by a producer whose limit is higher than the transport's, dead-lettered by
    /// the handler; waits for the record behind it to be handled and the partition committed; returns the drained dead letter.
    /// </summary>
    private async Task<NativeDeadLetter> DeadLetterTooLargeToCopyAsync(string name, Envelope poison, bool decodable = true, string reason = "poison")
    {
        var transport = await CreateTransportAsync(o => o.MaxMessageBytes = 1024);
        var queue = Name(name);
        MockCluster.CreateTopic(queue, 1);
        var behind = NewEnvelope("k");
        using (var producer = RawProducer())
        {
            await producer.ProduceAsync(queue, KafkaEnvelopeCodec.Encode(poison, "/other"));
            await producer.ProduceAsync(queue, KafkaEnvelopeCodec.Encode(behind, "/other"));
        }

        var handled = new ConcurrentDictionary<Guid, byte>();
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (d, ct) =>
        {
            if (d.Envelope.MessageId == poison.MessageId)
            {
                await d.DeadLetterAsync(reason, ct);
                return;
            }

            handled.TryAdd(d.Envelope.MessageId, 0);
        }));

        await Eventually.UntilAsync(() => handled.ContainsKey(behind.MessageId), "the message behind the one too large to copy is handled", Deadline);
        await Eventually.UntilAsync(() => Uncommitted(queue, queue) == 0, "the partition committed past both", Deadline);
        var moved = new List<NativeDeadLetter>();
        Assert.Equal(1, await transport.DrainDeadLettersAsync(queue, (d, _) => { moved.Add(d); return ValueTask.CompletedTask; }));
        var deadLetter = Assert.Single(moved);
        if (decodable)
        {
            Assert.Null(deadLetter.DecodeFailure);
            Assert.Equal(poison.MessageId, deadLetter.Envelope.MessageId);
        }
        else
        {
            Assert.NotNull(deadLetter.DecodeFailure);
        }

        return deadLetter;
    }
}

/// <summary>Tests that inject errors into the shared mock cluster run alone, so no other test's request takes the error.</summary>
[CollectionDefinition(nameof(ProduceErrorsCollection), DisableParallelization = true)]
public sealed class ProduceErrorsCollection;
