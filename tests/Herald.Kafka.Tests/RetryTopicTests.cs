using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using Confluent.Kafka;
using Herald.Kafka.Transport;
using Herald.Conformance;
using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Kafka.Tests;

/// <summary>Delays and dead letters at the transport level: the retry topic and its relay, the dead-letter topic and its drain.</summary>
public sealed class RetryTopicTests : KafkaTestBase
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Nack_WithDelay_ComesBackThroughTheRetryTopicAfterTheDelay_WithoutHoldingUpThePartition()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("retry");
        var failing = NewEnvelope("same-key");
        var behind = NewEnvelope("same-key");
        await transport.SendAsync(queue, failing);
        await transport.SendAsync(queue, behind);

        var deliveries = new ConcurrentQueue<(Envelope Envelope, long At)>();
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, ct) =>
        {
            deliveries.Enqueue((delivery.Envelope, Stopwatch.GetTimestamp()));
            if (delivery.Envelope.MessageId == failing.MessageId && delivery.Envelope.DeliveryAttempt == 1)
            {
                await delivery.NackAsync(TimeSpan.FromMilliseconds(400), new Dictionary<string, string> { ["why"] = "busy" }, ct);
            }
        }));

        await Eventually.UntilAsync(() => deliveries.Count >= 3, "the nacked message came back", Deadline);
        var order = deliveries.ToArray();
        Assert.Equal([failing.MessageId, behind.MessageId, failing.MessageId], order.Select(d => d.Envelope.MessageId));
        Assert.Equal([1, 1, 2], order.Select(d => d.Envelope.DeliveryAttempt));
        Assert.True(Stopwatch.GetElapsedTime(order[0].At, order[2].At) >= TimeSpan.FromMilliseconds(380), $"redelivered after {Stopwatch.GetElapsedTime(order[0].At, order[2].At)}");
        Assert.Equal("busy", order[2].Envelope.GetHeader("why"));
        Assert.Equal(failing.Body.ToArray(), order[2].Envelope.Body.ToArray());
        Assert.Equal(failing.PartitionKey, order[2].Envelope.PartitionKey);
        Assert.Equal(1, EndOffsets(queue + ".retry"));
        await Eventually.UntilAsync(() => Uncommitted(queue, queue) == 0 && Uncommitted(queue + ".retry", queue + ".retry") == 0, "both topics committed", Deadline);
    }

    [Fact]
    public async Task Send_WithDelay_IsHeldInTheRetryTopicUntilDue()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("later");
        var seen = new ConcurrentQueue<(Guid Id, long At)>();
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            seen.Enqueue((d.Envelope.MessageId, Stopwatch.GetTimestamp()));
            return ValueTask.CompletedTask;
        }));

        // The consumer has joined and reads (a group join can take longer than the delay on a loaded machine): only then
        // does the order of the two messages below say anything about the delay.
        var probe = NewEnvelope();
        await transport.SendAsync(queue, probe);
        await Eventually.UntilAsync(() => seen.Count == 1, "the probe", Deadline);

        var started = Stopwatch.GetTimestamp();
        var later = NewEnvelope();
        var now = NewEnvelope();
        await transport.SendAsync(queue, later, new SendOptions { Delay = TimeSpan.FromMilliseconds(1500) });
        await transport.SendAsync(queue, now);
        await Eventually.UntilAsync(() => seen.Count == 3, "both messages", Deadline);

        Assert.Equal([probe.MessageId, now.MessageId, later.MessageId], seen.Select(s => s.Id));
        Assert.True(Stopwatch.GetElapsedTime(started, seen.Last().At) >= TimeSpan.FromMilliseconds(1480));
    }

    // Audit 41: the relay's consumer group took the reset policy of ConfigureConsumer, so with a user's 'latest' a retry
    // partition the relay had never committed (nothing relayed from it yet) was read from its end after a restart: a delayed
    // record written meanwhile (or held there, not due, when the process stopped) was skipped and never relayed, while the
    // nack that wrote it had committed the original. The retry topic is Herald's own: it is always read from its start.
    [Fact]
    public async Task ADelayedRecordWrittenWhileNoRelayRan_IsRelayed_EvenWithALatestResetPolicy()
    {
        var queue = Name("latest-relay");
        Action<KafkaTransportOptions> latest = o => o.ConfigureConsumer = c => c.AutoOffsetReset = AutoOffsetReset.Latest;
        var handled = new ConcurrentQueue<Guid>();
        DeliveryHandler handler = (d, _) =>
        {
            handled.Enqueue(d.Envelope.MessageId);
            return ValueTask.CompletedTask;
        };

        // A first run: the queue's group and the relay's group join; the queue's starts are committed, the relay commits
        // nothing (nothing to relay).
        var first = await CreateTransportAsync(latest);
        var firstRun = await first.ConsumeAsync(queue, ConsumerOptions.Default, handler);
        var probe = NewEnvelope();
        await first.SendAsync(queue, probe);
        await Eventually.UntilAsync(() => handled.Contains(probe.MessageId), "the first run reads", Deadline);
        await firstRun.DisposeAsync();
        await first.DisposeAsync();

        // While no consumer runs, a delayed send goes to the retry topic.
        var sender = await CreateTransportAsync();
        var later = NewEnvelope("some-key");
        await sender.SendAsync(queue, later, new SendOptions { Delay = TimeSpan.FromMilliseconds(200) });

        var second = await CreateTransportAsync(latest);
        Own(await second.ConsumeAsync(queue, ConsumerOptions.Default, handler));
        await Eventually.UntilAsync(() => handled.Contains(later.MessageId), "the delayed record is relayed and handled", Deadline);
        await Eventually.UntilAsync(
            () => Uncommitted(queue + ".retry", second.Options.GroupIdPrefix + queue + ".retry") == 0, "the relay committed past it", Deadline);
    }

    [Fact]
    public async Task ARetryPartitionTakenAwayWhileItHeldARecord_IsReadAgainWhenItComesBack()
    {
        // librdkafka keeps a partition's pause across its revocation. The relay pauses a partition at a record that is not
        // due; one it gave up then and got back came back paused, and its delayed records were never relayed.
        var first = await CreateTransportAsync();
        var queue = Name("held");
        var retryTopic = first.Options.RetryTopicName(queue);
        var handled = new ConcurrentDictionary<Guid, byte>();
        DeliveryHandler handler = (d, _) =>
        {
            handled.TryAdd(d.Envelope.MessageId, 0);
            return ValueTask.CompletedTask;
        };
        Own(await first.ConsumeAsync(queue, ConsumerOptions.Default, handler));
        var relay = first.RelayOf(retryTopic) ?? throw new InvalidOperationException("no relay");

        // Delayed records on every partition of the retry topic: the relay holds (pauses) them all.
        var sent = Enumerable.Range(0, 16).Select(i => NewEnvelope("key-" + i)).ToList();
        foreach (var envelope in sent)
        {
            await first.SendAsync(queue, envelope, new SendOptions { Delay = TimeSpan.FromSeconds(10) });
        }

        await Eventually.UntilAsync(() => relay.Held.Count == 4, "the relay holds every partition at a record not due", Deadline);

        // A second process relays the same topic: the first gives partitions up while it holds them, then gets them back.
        var second = await CreateTransportAsync();
        await using (var consumer = await second.ConsumeAsync(queue, ConsumerOptions.Default, handler))
        {
            await Eventually.UntilAsync(() => relay.Held.Count < 4, "the first relay gives held partitions up", Deadline);
        }

        await second.DisposeAsync();
        await Eventually.UntilAsync(() => sent.All(e => handled.ContainsKey(e.MessageId)), "every delayed record relayed and handled", Deadline);
    }

    [Fact]
    public async Task DeadLetter_GoesToTheDeadLetterTopic_AndTheDrainMovesItOnceWithItsReason()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("dlt");
        var sent = NewEnvelope("k") with { CorrelationId = "flow-9" };
        await transport.SendAsync(queue, sent);
        var settled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, ct) =>
        {
            await delivery.DeadLetterAsync("no stock", new Dictionary<string, string> { [HeaderNames.DeadLetterCause] = "NotRetryable" }, ct);
            settled.TrySetResult();
        }));
        await settled.Task.WaitAsync(Deadline);
        Assert.Equal(1, EndOffsets(queue + ".dead-letter"));

        var deadLetter = await DrainSingleAsync(transport, queue);
        Assert.Equal(sent.MessageId, deadLetter.Envelope.MessageId);
        Assert.Equal("flow-9", deadLetter.Envelope.CorrelationId);
        Assert.Equal(queue, deadLetter.Queue);
        Assert.Equal("no stock", deadLetter.Reason);
        Assert.Equal("NotRetryable", deadLetter.Envelope.GetHeader(HeaderNames.DeadLetterCause));
        Assert.Null(deadLetter.DecodeFailure);

        // Moved means committed: the next drain finds nothing; a failing move leaves the record for the next drain.
        Assert.Equal(0, await transport.DrainDeadLettersAsync(queue, (_, _) => throw new InvalidOperationException("must not be called")));
    }

    [Fact]
    public async Task Drain_WhenTheMoveFails_StopsAndLeavesTheRecordForTheNextDrain()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("dlt-fail");
        await transport.SendAsync(queue, NewEnvelope());
        var settled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, ct) =>
        {
            await delivery.DeadLetterAsync("broken", ct);
            settled.TrySetResult();
        }));
        await settled.Task.WaitAsync(Deadline);

        await Assert.ThrowsAsync<InvalidOperationException>(async () =>
            await transport.DrainDeadLettersAsync(queue, (_, _) => throw new InvalidOperationException("store down")));
        Assert.Equal(1, await transport.DrainDeadLettersAsync(queue, (_, _) => ValueTask.CompletedTask));
    }

    // Round 4 (native dead-letter drain): the drain stopped at a record the store refused, its offsets being committed in
    // order, so every dead letter behind one the store kept refusing stayed out of the store for good. Now, once the store
    // took another in the round, the refused record is copied to the end of its partition and committed past; while the
    // store refuses everything (down), nothing is copied.
    [Fact]
    public async Task Drain_ARecordTheMoveKeepsRefusing_IsCopiedToTheEndOfItsPartition_AndTheRecordsBehindItAreMoved()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("dlt-refused");
        var deadLetterTopic = transport.Options.DeadLetterTopicName(queue);
        var sent = Enumerable.Range(0, 3).Select(_ => NewEnvelope("one-partition")).ToList();
        foreach (var envelope in sent)
        {
            await transport.SendAsync(queue, envelope);
        }

        var settled = 0;
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, ct) =>
        {
            await delivery.DeadLetterAsync("broken", ct);
            Interlocked.Increment(ref settled);
        }));
        await Eventually.UntilAsync(() => Volatile.Read(ref settled) == 3 && EndOffsets(deadLetterTopic) == 3, "three dead letters in one partition", Deadline);
        var poison = sent[0].MessageId;

        // The store down: every record refused, none copied.
        await Assert.ThrowsAsync<InvalidOperationException>(async () =>
            await transport.DrainDeadLettersAsync(queue, (_, _) => throw new InvalidOperationException("store down")));
        Assert.Equal(3, EndOffsets(deadLetterTopic));

        // The store refuses the first for good: the two behind it are moved, it is copied to the end.
        var moved = new List<NativeDeadLetter>();
        var refusedOnce = new List<NativeDeadLetter>();
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await transport.DrainDeadLettersAsync(queue, (d, _) =>
        {
            if (d.Envelope.MessageId == poison)
            {
                refusedOnce.Add(d);
                throw new InvalidOperationException("refused for good");
            }

            moved.Add(d);
            return ValueTask.CompletedTask;
        }));
        Assert.Equal(sent.Skip(1).Select(e => e.MessageId), moved.Select(d => d.Envelope.MessageId));
        Assert.Equal(4, EndOffsets(deadLetterTopic));

        // Refused alone in a round, it is not copied again; taken later, it is the same dead letter, with its reason.
        await Assert.ThrowsAsync<InvalidOperationException>(async () =>
            await transport.DrainDeadLettersAsync(queue, (_, _) => throw new InvalidOperationException("refused for good")));
        Assert.Equal(4, EndOffsets(deadLetterTopic));
        var later = new List<NativeDeadLetter>();
        Assert.Equal(1, await transport.DrainDeadLettersAsync(queue, (d, _) => { later.Add(d); return ValueTask.CompletedTask; }));
        var copy = Assert.Single(later);
        var first = Assert.Single(refusedOnce);
        Assert.Equal(poison, copy.Envelope.MessageId);
        Assert.Equal(sent[0].Body.ToArray(), copy.Envelope.Body.ToArray());
        Assert.Equal(sent[0].PartitionKey, copy.Envelope.PartitionKey);
        Assert.Equal("broken", copy.Reason);
        Assert.Equal(queue, copy.Queue);
        Assert.Equal(first.Time, copy.Time);
        Assert.NotNull(copy.NativeId);
        Assert.Equal(first.NativeId, copy.NativeId);
        Assert.Equal(0, Uncommitted(deadLetterTopic, deadLetterTopic + ".drain"));
    }

    // The drain looked each record's partition up among those it still had to read; a record of one it had finished (the
    // copy of a refused record at its end, or a dead letter written since the drain began) threw KeyNotFoundException
    // while other partitions were still being read, after the refused record had been copied a second time.
    [Fact]
    public async Task Drain_AfterAPartitionIsDone_LeavesTheRecordsWrittenToItSince_ForTheNextDrain()
    {
        // One record fetched at a time, so the finished partition's copy is read while the other is still drained.
        var transport = await CreateTransportAsync(o => o.ConfigureConsumer = c =>
        {
            c.QueuedMinMessages = 1;
            c.MaxPartitionFetchBytes = 1;
            c.FetchWaitMaxMs = 10;
            c.FetchQueueBackoffMs = 20;
        });
        var queue = Name("dlt-done");
        var deadLetterTopic = transport.Options.DeadLetterTopicName(queue);
        MockCluster.CreateTopic(deadLetterTopic, 2);
        var poison = NewEnvelope();
        var others = Enumerable.Range(0, 41).Select(_ => NewEnvelope()).ToList();
        using (var producer = RawProducer())
        {
            foreach (var (envelope, partition) in others.Select((e, i) => (e, i == 0 ? 0 : 1)).Prepend((poison, 0)))
            {
                await producer.ProduceAsync(new TopicPartition(deadLetterTopic, partition), KafkaEnvelopeCodec.Encode(envelope, "/other"));
            }
        }

        var moved = new List<Guid>();
        var refused = 0;
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await transport.DrainDeadLettersAsync(queue, (d, _) =>
        {
            if (d.Envelope.MessageId == poison.MessageId)
            {
                refused++;
                throw new InvalidOperationException("refused for good");
            }

            moved.Add(d.Envelope.MessageId);
            return ValueTask.CompletedTask;
        }));

        Assert.Equal(others.Select(e => e.MessageId).Order(), moved.Order());
        Assert.Equal(1, refused);
        Assert.Equal(43, EndOffsets(deadLetterTopic));
        var later = new List<Guid>();
        Assert.Equal(1, await transport.DrainDeadLettersAsync(queue, (d, _) => { later.Add(d.Envelope.MessageId); return ValueTask.CompletedTask; }));
        Assert.Equal([poison.MessageId], later);
        Assert.Equal(0, Uncommitted(deadLetterTopic, deadLetterTopic + ".drain"));
    }

    // A target the cluster can never take failed the relay's copy, which ended the relay for good; a record naming no
    // target was committed past and dropped, a log line the only trace of it. Such a record (not Herald's) due far ahead
    // was held until then before being dead-lettered: its partition, and Herald's delayed records behind it, waited with it.
    [Theory]
    [InlineData("no such topic!", "'no such topic!' is not a valid Kafka topic name", false)]
    [InlineData(null, "names no target topic", false)]
    [InlineData("no such topic!", "'no such topic!' is not a valid Kafka topic name", true)]
    [InlineData(null, "names no target topic", true)]
    public async Task Relay_OfARecordWithAnInvalidTarget_DeadLettersIt_WhateverItsDueTime_AndRelaysTheRecordsBehindIt(string? target, string reason, bool dueFarAhead)
    {
        var (transport, queue, retryTopic, handled) = await ConsumeRecordingAsync("bad-target");

        // A record from another writer, due now (or in a century), naming a target that is no topic name (or none); then Herald's own, one key, behind it.
        var stray = NewEnvelope("k");
        await ProduceDueAsync(retryTopic, stray, target, dueFarAhead ? DateTimeOffset.UtcNow.AddYears(100) : null);

        var behind = NewEnvelope("k");
        await transport.SendAsync(queue, behind, new SendOptions { Delay = TimeSpan.FromMilliseconds(300) });

        await Eventually.UntilAsync(() => handled.ContainsKey(behind.MessageId), "the record behind the stray one relayed and handled", Deadline);
        var moved = new List<NativeDeadLetter>();
        await Eventually.UntilAsync(() => EndOffsets(retryTopic + ".dead-letter") == 1, "the stray record in the retry topic's dead letters", Deadline);

        // Drained with the queue's own dead letters, as a host drains its endpoint's: the retry topic's were never drained.
        Assert.Equal(1, await transport.DrainDeadLettersAsync(queue, (d, _) => { moved.Add(d); return ValueTask.CompletedTask; }));
        var deadLetter = Assert.Single(moved);
        Assert.Equal(stray.MessageId, deadLetter.Envelope.MessageId);
        Assert.Contains(reason, deadLetter.Reason, StringComparison.Ordinal);
        await Eventually.UntilAsync(() => Uncommitted(retryTopic, retryTopic) == 0, "the retry topic committed past both", Deadline);

        // Retried as the dead-letter manager does, to the queue it names: that was the retry topic, whose relay
        // dead-lettered it again, for as often as it was retried.
        Assert.Equal(queue, deadLetter.Queue);
        await transport.SendAsync(deadLetter.Queue, deadLetter.Envelope with { DeliveryAttempt = 0 });
        await Eventually.UntilAsync(() => handled.ContainsKey(stray.MessageId), "the retried dead letter handled", Deadline);
    }

    /// <summary>
    /// Regression (stop 40): a record in a retry topic naming a valid target but due at the end of the calendar (another
    /// writer's, or a corrupt due time) was held until then, and every record behind it in its partition (Herald's own
    /// delayed retries) with it. No delay Herald writes is longer than the transport's MaxDelay: a due time further away
    /// than that (and a day for clocks) is malformed, and the record goes to the dead letters at once with the reason.
    /// </summary>
    [Theory]
    [InlineData(null)]
    [InlineData(367)]
    public async Task Relay_OfARecordDueBeyondTheLongestDelayHeraldWrites_DeadLettersIt_AndRelaysTheRecordsBehindIt(int? daysAhead)
    {
        var (transport, queue, retryTopic, handled) = await ConsumeRecordingAsync("far-due");

        // Due at the end of the year 9999 (or just past a year and a day), for the queue itself; then Herald's own, one key, behind it.
        var stray = NewEnvelope("k");
        var due = daysAhead is { } days ? DateTimeOffset.UtcNow.AddDays(days) : DateTimeOffset.FromUnixTimeMilliseconds(253402300799999L);
        await ProduceDueAsync(retryTopic, stray, queue, due);

        var behind = NewEnvelope("k");
        await transport.SendAsync(queue, behind, new SendOptions { Delay = TimeSpan.FromMilliseconds(300) });

        await Eventually.UntilAsync(() => handled.ContainsKey(behind.MessageId), "the record behind the far-due one relayed and handled", Deadline);
        var moved = new List<NativeDeadLetter>();
        await Eventually.UntilAsync(
            async () =>
            {
                await transport.DrainDeadLettersAsync(queue, (d, _) => { moved.Add(d); return ValueTask.CompletedTask; });
                return moved.Count > 0;
            },
            "the far-due record drained from the dead letters",
            Deadline);
        var deadLetter = Assert.Single(moved);
        Assert.Equal(stray.MessageId, deadLetter.Envelope.MessageId);
        Assert.Equal(queue, deadLetter.Queue);
        Assert.Contains("x-herald-due", deadLetter.Reason, StringComparison.Ordinal);
        Assert.Contains("beyond the longest delay", deadLetter.Reason, StringComparison.Ordinal);
        Assert.False(handled.ContainsKey(stray.MessageId));
        await Eventually.UntilAsync(() => Uncommitted(retryTopic, retryTopic) == 0, "the retry topic committed past both", Deadline);
    }

    /// <summary>
    /// Regression (stop 41): a record in a retry topic whose x-herald-due header was there but no Unix milliseconds in range
    /// (not Herald's, which always writes a number, or corrupt) was taken for one without a due time and relayed to its
    /// target at once. Nothing from the wire is trusted: it goes to the dead letters at once, the reason naming the header
    /// and its value; a record without the header at all is still due at once.
    /// </summary>
    [Theory]
    [InlineData("soon")]
    [InlineData("12ab")]
    [InlineData("-1")]
    [InlineData(" 5")]
    [InlineData("253402300800000")]
    [InlineData("99999999999999999999")]
    public async Task Relay_OfARecordWithAMalformedDueTime_DeadLettersIt_NamingTheHeaderAndItsValue_AndRelaysTheRecordsBehindIt(string dueText)
    {
        var (transport, queue, retryTopic, handled) = await ConsumeRecordingAsync("bad-due");

        // For the queue itself, due at a time that is no time; then Herald's own, one key, behind it.
        var stray = NewEnvelope("k");
        await ProduceAsync(retryTopic, stray, queue, Encoding.UTF8.GetBytes(dueText));

        var behind = NewEnvelope("k");
        await transport.SendAsync(queue, behind, new SendOptions { Delay = TimeSpan.FromMilliseconds(300) });

        await Eventually.UntilAsync(() => handled.ContainsKey(behind.MessageId), "the record behind the malformed one relayed and handled", Deadline);
        Assert.False(handled.ContainsKey(stray.MessageId), "the record with a malformed due time was relayed to its target");
        await Eventually.UntilAsync(() => EndOffsets(retryTopic + ".dead-letter") == 1, "the malformed record in the retry topic's dead letters", Deadline);
        var deadLetter = await DrainSingleAsync(transport, queue);
        Assert.Equal(stray.MessageId, deadLetter.Envelope.MessageId);
        Assert.Contains($"{KafkaEnvelopeCodec.DueHeader} header ('{dueText}')", deadLetter.Reason, StringComparison.Ordinal);
        await Eventually.UntilAsync(() => Uncommitted(retryTopic, retryTopic) == 0, "the retry topic committed past both", Deadline);
    }

    [Fact]
    public async Task Relay_OfARecordWithADueHeaderThatIsNotUtf8_DeadLettersIt()
    {
        var (transport, queue, retryTopic, handled) = await ConsumeRecordingAsync("bad-due-bytes");
        var stray = NewEnvelope("k");
        await ProduceAsync(retryTopic, stray, queue, [0x31, 0xFF, 0x32]);

        await Eventually.UntilAsync(() => EndOffsets(retryTopic + ".dead-letter") == 1, "the malformed record in the retry topic's dead letters", Deadline);
        Assert.Contains($"{KafkaEnvelopeCodec.DueHeader} header (not UTF-8 text)", (await DrainSingleAsync(transport, queue)).Reason, StringComparison.Ordinal);
        Assert.False(handled.ContainsKey(stray.MessageId));
    }

    [Fact]
    public async Task Relay_OfARecordWithoutADueHeader_RelaysItAtOnce()
    {
        var (_, queue, retryTopic, handled) = await ConsumeRecordingAsync("no-due");
        var stray = NewEnvelope("k");
        await ProduceAsync(retryTopic, stray, queue, due: null);

        await Eventually.UntilAsync(() => handled.ContainsKey(stray.MessageId), "the record without a due time relayed and handled", Deadline);
    }

    [Fact]
    public async Task Send_WithADelayBeyondMaxDelay_IsRefused_SoHeraldNeverWritesADueItsRelayRefuses()
    {
        var transport = await CreateTransportAsync();
        Assert.Equal(TimeSpan.FromDays(365), transport.Capabilities.MaxDelay);
        var queue = Name("too-long");
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () =>
            await transport.SendAsync(queue, NewEnvelope(), new SendOptions { Delay = transport.Capabilities.MaxDelay + TimeSpan.FromSeconds(1) }));
    }

    // Kafka's UNKNOWN_TOPIC_OR_PART: how the mock answers for a topic that does not exist on a cluster without auto-creation.
    private const int UnknownTopic = 3;

    // The transport health check's probe: EnsureTopicAsync remembers a topic once found, so a declare answered from that
    // cache stayed healthy with the topic gone; it now asks a broker for the topic's metadata each time.
    [Fact]
    public async Task DeclareQueue_AfterTheTopicIsGone_Fails_InsteadOfAnsweringFromTheCache()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("probe");
        await transport.DeclareQueueAsync(queue);
        MockCluster.SetTopicError(queue, UnknownTopic);
        try
        {
            using var timeout = new CancellationTokenSource(Deadline);
            await Assert.ThrowsAsync<HeraldException>(() => transport.DeclareQueueAsync(queue, timeout.Token).AsTask());
        }
        finally
        {
            MockCluster.SetTopicError(queue, 0);
        }
    }

    // Round 3 (Kafka retry relay): with CreateTopics off, a target topic that does not exist is a permanent failure, as a
    // refusal is: the record goes to the target's dead-letter topic with a reason naming the missing topic, and the records
    // behind it are relayed (drained into the dead-letter store, it can be retried once the topic is there).
    [Fact]
    public async Task Relay_ToATargetTopicThatDoesNotExist_DeadLettersIt_WithAReasonNamingTheTopic()
    {
        var transport = await CreateTransportAsync();
        Assert.False(transport.Options.CreateTopics);
        var queue = Name("missing-target");
        var target = Name("gone");
        MockCluster.SetTopicError(target, UnknownTopic);
        var handled = new ConcurrentDictionary<Guid, byte>();
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            handled.TryAdd(d.Envelope.MessageId, 0);
            return ValueTask.CompletedTask;
        }));

        var stray = NewEnvelope("k");
        await ProduceDueAsync(transport.Options.RetryTopicName(queue), stray, target);
        var behind = NewEnvelope("k");
        await transport.SendAsync(queue, behind, new SendOptions { Delay = TimeSpan.FromMilliseconds(300) });

        await Eventually.UntilAsync(() => handled.ContainsKey(behind.MessageId), "the record behind the one for the missing topic relayed", Deadline);
        await Eventually.UntilAsync(() => EndOffsets(target + ".dead-letter") == 1, "the record in the missing target's dead letters", Deadline);
        var deadLetter = await DrainSingleAsync(transport, target);
        Assert.Equal(stray.MessageId, deadLetter.Envelope.MessageId);
        Assert.Contains($"Kafka topic '{target}' does not exist and CreateTopics is off", deadLetter.Reason, StringComparison.Ordinal);
    }

    // Round 3 (Kafka retry relay): when the target's dead-letter topic is missing too, the record was held and tried again
    // every 30 s for ever, logged as going to the dead letters (6022) although it never did, and counted nowhere. It is
    // still kept in the retry topic (nothing lost), but the operator is told what to create (error 6023) and each failed
    // relay is counted (herald.kafka.relay.failed); once the topic is there it is dead-lettered.
    [Fact]
    public async Task Relay_ToAMissingTargetWhoseDeadLetterTopicIsMissingToo_KeepsTheRecord_TellsTheOperator_AndDeadLettersItOnceTheTopicExists()
    {
        var logs = new TestOutputLogger(LogLevel.Warning);
        LoggerFactory = new Microsoft.Extensions.Logging.LoggerFactory([logs]);
        var transport = await CreateTransportAsync();
        var queue = Name("missing-dead-letters");
        var retryTopic = transport.Options.RetryTopicName(queue);
        var target = Name("gone");
        var deadLetterTopic = target + ".dead-letter";
        MockCluster.SetTopicError(target, UnknownTopic);
        MockCluster.SetTopicError(deadLetterTopic, UnknownTopic);
        long failures = 0;
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == "Herald" && instrument.Name == "herald.kafka.relay.failed")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "messaging.destination.name" && (string?)tag.Value == target)
                {
                    Interlocked.Add(ref failures, value);
                }
            }
        });
        listener.Start();
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (_, _) => ValueTask.CompletedTask));

        var told = logs.WhenLoggedAsync($"could not be dead-lettered to '{deadLetterTopic}' either");
        var stray = NewEnvelope("k");
        await ProduceDueAsync(retryTopic, stray, target);
        await told.WaitAsync(Deadline);
        await Eventually.UntilAsync(() => Interlocked.Read(ref failures) >= 1, "the failed relay counted", Deadline);
        Assert.Equal(1, Uncommitted(retryTopic, transport.Options.GroupIdPrefix + retryTopic));

        MockCluster.SetTopicError(deadLetterTopic, 0);
        await Eventually.UntilAsync(() => EndOffsets(deadLetterTopic) == 1, "the record dead-lettered once its dead-letter topic exists", Deadline);
        await Eventually.UntilAsync(() => Uncommitted(retryTopic, transport.Options.GroupIdPrefix + retryTopic) == 0, "the relay committed past it", Deadline);
    }

    // Round 3 leftovers (Kafka retry relay): a target topic deleted after this process produced to it stayed remembered as
    // existing, so every produce to it failed with an unknown-topic error, which the relay took for a passing one and
    // retried every 30 s for ever. The topic is now checked again after such an error: with CreateTopics off the record
    // goes to the dead letters with a reason naming the topic, as for a target that never existed.
    [Fact]
    public async Task Relay_ToATargetTopicDeletedAfterItWasProducedTo_DeadLettersIt_WithAReasonNamingTheTopic()
    {
        // The producer refreshes its metadata often and gives a missing topic no time to appear, so it sees the deletion
        // within moments.
        var transport = await CreateTransportAsync(o => o.ConfigureProducer = c =>
        {
            c.TopicMetadataRefreshIntervalMs = 100;
            c.TopicMetadataPropagationMaxMs = 100;
        });
        Assert.False(transport.Options.CreateTopics);
        var queue = Name("deleted-target");
        var target = Name("deleted");
        await transport.SendAsync(target, NewEnvelope());
        MockCluster.SetTopicError(target, UnknownTopic);
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (_, _) => ValueTask.CompletedTask));

        // Waits until the producer has seen the deletion: a send to the topic fails.
        await Eventually.UntilAsync(
            async () =>
            {
                try
                {
                    await transport.SendAsync(target, NewEnvelope());
                    return false;
                }
                catch (Exception e) when (e is ProduceException<byte[]?, byte[]> or HeraldException)
                {
                    return true;
                }
            },
            "a send to the deleted topic fails",
            Deadline);

        var stray = NewEnvelope("k");
        await ProduceDueAsync(transport.Options.RetryTopicName(queue), stray, target);
        await Eventually.UntilAsync(() => EndOffsets(target + ".dead-letter") == 1, "the record in the deleted target's dead letters", Deadline);
        var deadLetter = await DrainSingleAsync(transport, target);
        Assert.Equal(stray.MessageId, deadLetter.Envelope.MessageId);
        Assert.Contains($"Kafka topic '{target}' does not exist and CreateTopics is off", deadLetter.Reason, StringComparison.Ordinal);

        // A direct send is told the topic is missing too, not refused by the client for as long as the process runs.
        var sendError = await Assert.ThrowsAsync<HeraldException>(async () => await transport.SendAsync(target, NewEnvelope()));
        Assert.Contains($"Kafka topic '{target}' does not exist", sendError.Message, StringComparison.Ordinal);
    }

    /// <summary>Drains the dead letters of <paramref name="queue"/>, which hold exactly one, and returns it.</summary>
    private static async Task<NativeDeadLetter> DrainSingleAsync(KafkaTransport transport, string queue)
    {
        var moved = new List<NativeDeadLetter>();
        Assert.Equal(1, await transport.DrainDeadLettersAsync(queue, (d, _) => { moved.Add(d); return ValueTask.CompletedTask; }));
        return Assert.Single(moved);
    }

    /// <summary>A transport consuming a new queue, recording the ids of what it handled, and the queue's retry topic.</summary>
    private async Task<(KafkaTransport Transport, string Queue, string RetryTopic, ConcurrentDictionary<Guid, byte> Handled)> ConsumeRecordingAsync(string purpose)
    {
        var transport = await CreateTransportAsync();
        var queue = Name(purpose);
        var handled = new ConcurrentDictionary<Guid, byte>();
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            handled.TryAdd(d.Envelope.MessageId, 0);
            return ValueTask.CompletedTask;
        }));
        return (transport, queue, transport.Options.RetryTopicName(queue), handled);
    }

    /// <summary>Writes a record to a retry topic behind Herald's back, due now (or at <paramref name="due"/>), for <paramref name="target"/>.</summary>
    private static Task ProduceDueAsync(string retryTopic, Envelope envelope, string? target, DateTimeOffset? due = null) =>
        ProduceAsync(retryTopic, envelope, target, Encoding.UTF8.GetBytes((due ?? DateTimeOffset.UtcNow).ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture)));

    /// <summary>Writes a record to a retry topic behind Herald's back, its due header holding <paramref name="due"/> (none when null), for <paramref name="target"/>.</summary>
    private static async Task ProduceAsync(string retryTopic, Envelope envelope, string? target, byte[]? due)
    {
        using var producer = RawProducer();
        var message = KafkaEnvelopeCodec.Encode(envelope, "tests");
        if (due is not null)
        {
            message.Headers.Add(KafkaEnvelopeCodec.DueHeader, due);
        }

        if (target is not null)
        {
            message.Headers.Add(KafkaEnvelopeCodec.TargetHeader, Encoding.UTF8.GetBytes(target));
        }

        await producer.ProduceAsync(retryTopic, message);
    }
}
