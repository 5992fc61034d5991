using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Conformance.Transport;
using Herald.Kafka.Transport;
using Herald.Messages;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Kafka.Tests;

/// <summary>Consumer groups on the cluster under test: rebalances while handlers run, restarts, start positions.</summary>
public sealed class ConsumerGroupTests : KafkaTestBase
{

    /// <summary>
    /// A time setting too long to wait on passed validation and threw where it was used: AssignmentTimeout's WaitAsync
    /// failed every ConsumeAsync, RevocationTimeout's wait failed the rebalance callback, and CommitInterval overflowed
    /// the next commit's timestamp so the loop committed on every pass.
    /// </summary>
    [Theory]
    [InlineData(nameof(KafkaTransportOptions.CommitInterval))]
    [InlineData(nameof(KafkaTransportOptions.RevocationTimeout))]
    [InlineData(nameof(KafkaTransportOptions.AssignmentTimeout))]
    [InlineData(nameof(KafkaTransportOptions.CloseTimeout))]
    public void ATimeSettingTooLongToWaitOn_FailsTheValidationNamingIt(string setting)
    {
        var options = new KafkaTransportOptions { BootstrapServers = "127.0.0.1:9092" };
        typeof(KafkaTransportOptions).GetProperty(setting)!.SetValue(options, TimeSpan.MaxValue);

        var problem = Assert.Single(options.Validate());
        Assert.Contains(setting, problem, StringComparison.Ordinal);
    }
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    public ConsumerGroupTests(ITestOutputHelper output)
    {
        _output = output;
        LoggerFactory = new TestOutputLoggerFactory(output);
    }

    private readonly ITestOutputHelper _output;

    [Fact]
    public async Task Rebalance_WhileAHandlerRuns_ItFinishesBeforeThePartitionMoves_AndNothingIsHandledTwiceOrSkipped()
    {
        var queue = Name("rebalance");
        var first = await CreateTransportAsync();
        var second = await CreateTransportAsync();
        var sent = Enumerable.Range(0, 40).Select(i => NewEnvelope("key-" + (i % 8))).ToList();
        foreach (var envelope in sent)
        {
            await first.SendAsync(queue, envelope);
        }

        var handled = new ConcurrentDictionary<Guid, int>();
        var revoking = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumerA = (KafkaConsumer)await first.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 4 }, async (delivery, ct) =>
        {
            if (holding.TrySetResult())
            {
                // The first handler is still running when the group takes partitions away: the revocation must wait for it.
                await revoking.Task.WaitAsync(Deadline, ct);
            }

            handled.AddOrUpdate(delivery.Envelope.MessageId, 1, (_, n) => n + 1);
            _output.WriteLine($"A handled {delivery.Envelope.PartitionKey} {delivery.Envelope.MessageId}");
        });
        Own(consumerA);
        consumerA.Revoking += _ => revoking.TrySetResult();
        await holding.Task.WaitAsync(Deadline);

        // A second member joins while that handler runs.
        var consumerB = Own(await second.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 4 }, (delivery, _) =>
        {
            handled.AddOrUpdate(delivery.Envelope.MessageId, 1, (_, n) => n + 1);
            _output.WriteLine($"B handled {delivery.Envelope.PartitionKey} {delivery.Envelope.MessageId}");
            return ValueTask.CompletedTask;
        }));

        await revoking.Task.WaitAsync(Deadline);
        await Eventually.UntilAsync(() => sent.All(e => handled.ContainsKey(e.MessageId)), "every message handled by one member or the other", Deadline);
        await Eventually.UntilAsync(() => Uncommitted(queue, queue) == 0, "every offset committed", Deadline);
        Assert.True(((KafkaConsumer)consumerB).Assignment.Count > 0, "the second member got partitions");
        Assert.All(sent, e => Assert.Equal(1, handled[e.MessageId]));
    }

    [Fact]
    public async Task APartitionTakenAwayWhileTheConsumerWasPaused_IsConsumedAgainWhenItComesBack()
    {
        // librdkafka keeps a partition's pause across its revocation: a partition given up while every slot was busy came
        // back paused, and its records were never read (one CI run of StreamConsumerGroupTests stalled on it).
        var queue = Name("paused-revoke");
        var first = await CreateTransportAsync();
        var second = await CreateTransportAsync();
        var handled = new ConcurrentDictionary<Guid, string>();
        var busy = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumerA = (KafkaConsumer)Own(await first.ConsumeAsync(queue, new ConsumerOptions { Prefetch = 1, MaxConcurrency = 1 }, async (delivery, ct) =>
        {
            if (busy.TrySetResult())
            {
                await release.Task.WaitAsync(Deadline, ct);
            }

            handled[delivery.Envelope.MessageId] = "A";
        }));
        await first.SendAsync(queue, NewEnvelope("first"));
        await busy.Task.WaitAsync(Deadline);
        await Eventually.UntilAsync(() => consumerA.Paused, "the busy consumer paused its partitions", Deadline);

        // B joins while A is paused, so A gives partitions up paused; then A has room again and B leaves.
        var consumerB = (KafkaConsumer)await second.ConsumeAsync(queue, new ConsumerOptions(), (delivery, _) =>
        {
            handled[delivery.Envelope.MessageId] = "B";
            return ValueTask.CompletedTask;
        });
        await Eventually.UntilAsync(() => consumerB.Assignment.Count > 0, "the joining consumer is given partitions", Deadline);
        var given = consumerB.Assignment.Select(p => p.Partition.Value).ToList();
        _output.WriteLine($"B holds partitions [{string.Join(",", given)}]");
        release.TrySetResult();
        await Eventually.UntilAsync(() => !consumerA.Paused, "A resumes once its handler is done", Deadline);
        await consumerB.StopAsync();
        await consumerB.DisposeAsync();
        await Eventually.UntilAsync(() => consumerA.Assignment.Count == 4, "A holds every partition again", Deadline);

        // Records of every partition, those A gave up paused included, reach A.
        var sent = Enumerable.Range(0, 32).Select(i => NewEnvelope("key-" + i)).ToList();
        foreach (var envelope in sent)
        {
            await first.SendAsync(queue, envelope);
        }

        try
        {
            await Eventually.UntilAsync(() => sent.All(e => handled.ContainsKey(e.MessageId)), "every record handled", Deadline);
        }
        finally
        {
            _output.WriteLine($"{sent.Count(e => handled.ContainsKey(e.MessageId))} of {sent.Count} handled; A holds [{string.Join(",", consumerA.Assignment.Select(p => p.Partition.Value))}]");
        }

        Assert.All(sent, e => Assert.Equal("A", handled[e.MessageId]));
    }

    [Fact]
    public async Task Rebalance_WhenARunningHandlerOutlivesTheRevocationTimeout_ItIsAbandoned_AndTheNewOwnerHandlesItsMessage()
    {
        var queue = Name("abandon");
        var log = new RecordingLoggerFactory(LoggerFactory!);
        LoggerFactory = log;
        var first = await CreateTransportAsync(o => o.RevocationTimeout = TimeSpan.FromMilliseconds(300));
        var second = await CreateTransportAsync();
        // A key on a partition the first member gives up when the second joins (partition 2 of 4, placed by murmur2).
        var stuck = NewEnvelope("stuck-1");
        await first.SendAsync(queue, stuck);

        var acked = new ConcurrentDictionary<Guid, int>();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Own(await first.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, ct) =>
        {
            started.TrySetResult();
            try
            {
                await Task.Delay(Deadline * 2, ct);
            }
            catch (OperationCanceledException)
            {
                cancelled.TrySetResult();
                throw;
            }
        }));
        await started.Task.WaitAsync(Deadline);

        // The second member can only take the partitions after the first gives them up; its handler acks.
        var secondConsumer = second.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, ct) =>
        {
            await delivery.AckAsync(ct);
            acked.AddOrUpdate(delivery.Envelope.MessageId, 1, (_, n) => n + 1);
        });

        await cancelled.Task.WaitAsync(Deadline);
        Own(await secondConsumer);
        await Eventually.UntilAsync(() => acked.ContainsKey(stuck.MessageId), "the abandoned message is handled by the new owner", Deadline);
        await Eventually.UntilAsync(() => Uncommitted(queue, queue) == 0, "its offset is committed once", Deadline);
        Assert.Equal(1, acked[stuck.MessageId]);

        // Said, naming the partition and where its next owner reads it from: the stuck record's offset, the first of the log.
        var timedOut = Assert.Single(log.Entries, e => e.Id == 6033 && e.Message.Contains(queue, StringComparison.Ordinal)).Message;
        Assert.Contains("(00:00:00.3000000)", timedOut, StringComparison.Ordinal);
        Assert.Contains("1 record(s) taken from it are abandoned", timedOut, StringComparison.Ordinal);
        Assert.Contains("reads it again from offset 0,", timedOut, StringComparison.Ordinal);
    }

    /// <summary>
    /// A Kafka client whose close never returns (librdkafka hangs in a close that an assignment reaches, issue #4884) must not
    /// hold a dispose, nor the application's stop, for good: past CloseTimeout the dispose returns, says so (6035), and leaves
    /// the client closing; when the close ends after all, the poll thread finishes cleanly (its state was not disposed under it).
    /// The hang is made by holding the revocation that leaving the group brings, on the poll thread, as the close would be held.
    /// </summary>
    [Fact]
    public async Task Dispose_WhoseClientDoesNotLeaveTheGroup_ReturnsAfterTheCloseTimeout_AndSaysSo()
    {
        var queue = Name("close-hang");
        var log = new RecordingLoggerFactory(LoggerFactory!);
        LoggerFactory = log;
        var transport = await CreateTransportAsync(o => o.CloseTimeout = TimeSpan.FromSeconds(1));
        var handled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumer = (KafkaConsumer)await transport.ConsumeAsync(queue, ConsumerOptions.Default, (_, _) =>
        {
            handled.TrySetResult();
            return ValueTask.CompletedTask;
        });
        await transport.SendAsync(queue, NewEnvelope());
        await handled.Task.WaitAsync(Deadline);

        var leaving = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var close = new ManualResetEventSlim(false);
        consumer.Revoking += _ =>
        {
            leaving.TrySetResult();
            close.Wait(Deadline * 2);
        };
        try
        {
            var disposing = consumer.DisposeAsync().AsTask();
            await leaving.Task.WaitAsync(Deadline);
            await disposing.WaitAsync(Deadline);

            var said = Assert.Single(log.Entries, e => e.Id == 6035).Message;
            Assert.Contains(queue, said, StringComparison.Ordinal);
            Assert.Contains("(00:00:01)", said, StringComparison.Ordinal);
            Assert.DoesNotContain(log.Entries, e => e.Id == 1612); // no handler was running: none is said to be abandoned
        }
        finally
        {
            close.Set();
        }

        // The close ends after all: the poll thread finishes without failing.
        await consumer.Completion.WaitAsync(Deadline);
        Assert.DoesNotContain(log.Entries, e => e.Id == 6015);
    }

    /// <summary>
    /// A stop leaves to the partition's next owner the records taken and not started when it began: the commit stops at the
    /// first of them, so whatever after it was handled here is handled again there. The stop says so (6034), naming the
    /// partition and the offset the next owner reads from, so an operator can tell a repeat from a bug.
    /// </summary>
    [Fact]
    public async Task Stop_WithARecordTakenButNotStarted_LeavesItToTheNextOwner_AndSaysFromWhichOffset()
    {
        var queue = Name("stop-left");
        var log = new RecordingLoggerFactory(LoggerFactory!);
        LoggerFactory = log;
        var transport = await CreateTransportAsync();
        MockCluster.CreateTopic(queue, 1);
        var first = NewEnvelope("same-key");
        var second = NewEnvelope("same-key");
        await transport.SendAsync(queue, first);
        await transport.SendAsync(queue, second);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handled = new ConcurrentQueue<Guid>();
        var consumer = (KafkaConsumer)await transport.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 1, Prefetch = 2 }, async (delivery, _) =>
        {
            handled.Enqueue(delivery.Envelope.MessageId);
            started.TrySetResult();
            await release.Task;
        });
        try
        {
            await started.Task.WaitAsync(Deadline);

            // Both taken (every prefetch slot busy, so the poll loop paused): the second waits in the lane behind the first.
            await Eventually.UntilAsync(() => consumer.Paused, "both records taken", Deadline);
            var stopping = consumer.StopAsync();
            release.TrySetResult();
            await stopping.WaitAsync(Deadline);

            Assert.Equal([first.MessageId], handled);
            Assert.Equal(1, Uncommitted(queue, queue));
            var left = Assert.Single(log.Entries, e => e.Id == 6034 && e.Message.Contains(queue, StringComparison.Ordinal)).Message;
            Assert.Contains("leaves 1 record(s) of partition", left, StringComparison.Ordinal);
            Assert.Contains("reads the partition again from offset 1,", left, StringComparison.Ordinal);
        }
        finally
        {
            release.TrySetResult();
            await consumer.DisposeAsync();
        }
    }

    /// <summary>
    /// Regression (audit, round 9): a stop whose deadline had passed still waited for a handler that ignores its token for as
    /// long as it ran (the poll loop waited for every running handler), and so did dispose and the host's stop. It now
    /// abandons it ConsumerStop's grace after its token fired: the poll loop commits what settled and leaves the group, the
    /// handler's ack when it ends commits nothing, and the next member of the group handles the message again.
    /// </summary>
    [Fact]
    public async Task Stop_WhileAHandlerIgnoresItsCancellation_ReturnsAfterTheGrace_AndTheNextMemberHandlesItsMessageAgain()
    {
        var queue = Name("stop-abandon");
        var transport = await CreateTransportAsync();
        var stubborn = NewEnvelope("stubborn");
        await transport.SendAsync(queue, stubborn);
        var started = new TaskCompletionSource<Delivery>(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, _) =>
        {
            started.TrySetResult(delivery);
            await release.Task;
        });
        try
        {
            var abandoned = await started.Task.WaitAsync(Deadline);
            await StopWithinTheGraceAsync(first);

            // The handler ends after the stop: its ack must commit nothing, so the next member reads the record again.
            release.TrySetResult();
            await Eventually.UntilAsync(() => abandoned.IsSettled, "the abandoned handler ended", Deadline);
            var seen = new ConcurrentQueue<Guid>();
            Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (delivery, _) =>
            {
                seen.Enqueue(delivery.Envelope.MessageId);
                return ValueTask.CompletedTask;
            }));
            await Eventually.UntilAsync(() => seen.Contains(stubborn.MessageId), "the abandoned record consumed again", Deadline);
            await Eventually.UntilAsync(() => Uncommitted(queue, queue) == 0, "its offset committed by the next member", Deadline);
        }
        finally
        {
            release.TrySetResult();
            await first.DisposeAsync();
        }
    }

    /// <summary>
    /// Regression (stop 40): a rebalance's revocation waits on the poll thread for the revoked partitions' running handlers,
    /// up to RevocationTimeout. A stop whose token fired meanwhile abandoned those handlers, but the wait went on (and 5 s
    /// more after it): the stop, a dispose and the host's shutdown waited out the whole RevocationTimeout. The wait now ends
    /// when the stop abandons the handlers; what they settle later is dropped, so the next member handles the record again.
    /// </summary>
    [Fact]
    public async Task Stop_DuringARevocationWaitForAHandlerThatIgnoresItsCancellation_ReturnsAfterTheGrace_AndTheRecordIsHandledAgain()
    {
        var queue = Name("stop-revoking");
        var first = await CreateTransportAsync(o => o.RevocationTimeout = TimeSpan.FromMinutes(2));
        var second = await CreateTransportAsync();
        var stubborn = NewEnvelope("stubborn");
        await first.SendAsync(queue, stubborn);
        var started = new TaskCompletionSource<Delivery>(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var revoking = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumerA = (KafkaConsumer)await first.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, _) =>
        {
            started.TrySetResult(delivery);
            await release.Task;
        });
        consumerA.Revoking += _ => revoking.TrySetResult();
        var seen = new ConcurrentQueue<Guid>();
        Task<ITransportConsumer>? joining = null;
        try
        {
            var abandoned = await started.Task.WaitAsync(Deadline);

            // A second member joins: the first's poll thread waits in the revocation for the handler, which ignores its token.
            joining = second.ConsumeAsync(queue, ConsumerOptions.Default, (delivery, _) =>
            {
                seen.Enqueue(delivery.Envelope.MessageId);
                return ValueTask.CompletedTask;
            }, CancellationToken.None).AsTask();
            await revoking.Task.WaitAsync(Deadline);

            await StopWithinTheGraceAsync(consumerA);

            // The handler ends after the stop: what it settles commits nothing, and the other member handles the record.
            release.TrySetResult();
            await Eventually.UntilAsync(() => abandoned.IsSettled, "the abandoned handler ended", Deadline);
            await joining.WaitAsync(Deadline);
            await Eventually.UntilAsync(() => seen.Contains(stubborn.MessageId), "the abandoned record consumed again by the other member", Deadline);
            await Eventually.UntilAsync(() => Uncommitted(queue, queue) == 0, "its offset committed by the other member", Deadline);
        }
        finally
        {
            release.TrySetResult();
            await consumerA.DisposeAsync();
            if (joining is not null)
            {
                Own(await joining);
            }
        }
    }

    /// <summary>Stops <paramref name="consumer"/> with a token firing after 200 ms and disposes it: both must return within the abandon grace (and 3 s of slack).</summary>
    private static async Task StopWithinTheGraceAsync(ITransportConsumer consumer)
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        var stopwatch = System.Diagnostics.Stopwatch.StartNew();
        await consumer.StopAsync(deadline.Token).WaitAsync(TimeSpan.FromSeconds(15));
        await consumer.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(15));
        Assert.InRange(stopwatch.Elapsed, TimeSpan.Zero, TimeSpan.FromMilliseconds(200) + Herald.Internal.ConsumerStop.AbandonGrace + TimeSpan.FromSeconds(3));
    }

    [Fact]
    public async Task AHandlerRunningLongerThanMaxPollInterval_KeepsItsPartition_AndItsMessageIsHandledOnce()
    {
        // The client leaves the group when it is not polled for max.poll.interval.ms; the poll thread goes on polling
        // (paused) while every slot is busy, so a long handler keeps its partition and nothing is read again.
        var maxPoll = TimeSpan.FromSeconds(2);
        var queue = Name("long-handler");
        var transport = await CreateTransportAsync(o => o.ConfigureConsumer = c => c.MaxPollIntervalMs = (int)maxPoll.TotalMilliseconds);
        var slow = NewEnvelope("slow");
        await transport.SendAsync(queue, slow);
        var handled = new ConcurrentDictionary<Guid, int>();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var revoked = false;
        var consumer = (KafkaConsumer)Own(await transport.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 1, Prefetch = 1 }, async (delivery, ct) =>
        {
            if (handled.AddOrUpdate(delivery.Envelope.MessageId, 1, (_, n) => n + 1) == 1)
            {
                started.TrySetResult();
                await Task.Delay(maxPoll * 3, ct);
            }
        }));
        consumer.Revoking += _ => revoked = true;
        await started.Task.WaitAsync(Deadline);

        await Eventually.UntilAsync(() => Uncommitted(queue, queue) == 0, "the slow message's offset is committed", Deadline);
        Assert.Equal(1, handled[slow.MessageId]);
        Assert.False(revoked, "the consumer lost its partitions while its handler ran");
    }

    [Fact]
    public async Task AGracefulStopWaitingForAHandlerLongerThanMaxPollInterval_KeepsItsPartition_SoTheNextMemberDoesNotHandleItsMessageAgain()
    {
        // Stopping waited for running handlers without polling: past max.poll.interval.ms the client left the group, the
        // other member took every partition and handled the running handler's message a second time.
        var maxPoll = TimeSpan.FromSeconds(2);
        var queue = Name("stop-long-handler");
        var first = await CreateTransportAsync(o =>
        {
            o.ConfigureConsumer = c => c.MaxPollIntervalMs = (int)maxPoll.TotalMilliseconds;

            // Longer than the handler runs: a partition the joining member asks for waits for it, and is not abandoned.
            o.RevocationTimeout = Deadline;
        });
        var second = await CreateTransportAsync(o => o.ConfigureConsumer = c => c.MaxPollIntervalMs = (int)maxPoll.TotalMilliseconds);
        var slow = NewEnvelope("slow");
        await first.SendAsync(queue, slow);
        var seen = new DeliveryCollector();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumerA = (KafkaConsumer)await first.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, ct) =>
        {
            seen.Add(delivery, "A");
            started.TrySetResult();
            await release.Task.WaitAsync(Deadline, ct);
        });
        await started.Task.WaitAsync(Deadline);
        var stopping = consumerA.StopAsync();
        Own(await second.ConsumeAsync(queue, ConsumerOptions.Default, (delivery, _) =>
        {
            seen.Add(delivery, "B");
            return ValueTask.CompletedTask;
        }));

        // Long enough for the client to leave the group and the other member to take every partition and read it (13 s on
        // the mock); well within the revocation timeout, the handler then finishes.
        await seen.AssertNoMoreThanAsync(1, maxPoll * 10, "the message was handled again while its first handler ran");
        release.TrySetResult();
        await stopping.WaitAsync(Deadline);
        await consumerA.DisposeAsync();
        await Eventually.UntilAsync(() => Uncommitted(queue, queue) == 0, "the slow message's offset is committed", Deadline);
        Assert.Equal(["A"], seen.Items.Select(d => d.Consumer));
        Assert.Equal(slow.MessageId, seen.Items[0].Envelope.MessageId);
    }

    [Fact]
    public async Task SettledOffsets_AreCommitted_WhileEverySlotIsHeldBySlowHandlers()
    {
        var queue = Name("busy");
        var transport = await CreateTransportAsync();
        // No keys: each goes to the least loaded lane, so three handlers can hold three lanes.
        // The first is sent alone and the rest only once its handler runs, so it is the oldest of its partition whatever
        // partitions the rest land on and in whatever order their handlers start.
        var sent = Enumerable.Range(0, 4).Select(_ => NewEnvelope()).ToList();
        await transport.SendAsync(queue, sent[0]);
        var firstRunning = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = 0;
        var first = 0;
        var othersRunning = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Own(await transport.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 3, Prefetch = 3 }, async (delivery, ct) =>
        {
            if (Interlocked.Exchange(ref first, 1) == 0)
            {
                firstRunning.TrySetResult();
                // The first to arrive (so the oldest of its partition) finishes once two others hold their slots; the
                // fourth then takes the freed slot, and every slot stays busy.
                await othersRunning.Task.WaitAsync(Deadline, ct);
                return;
            }

            if (Interlocked.Increment(ref running) == 2)
            {
                othersRunning.TrySetResult();
            }

            await release.Task.WaitAsync(Deadline, ct);
        }));

        await firstRunning.Task.WaitAsync(Deadline);
        foreach (var envelope in sent.Skip(1))
        {
            await transport.SendAsync(queue, envelope);
        }

        await Eventually.UntilAsync(() => Volatile.Read(ref running) == 3, "three slow handlers hold every slot", Deadline);
        await Eventually.UntilAsync(() => Uncommitted(queue, queue) == 3, "the first message's offset is committed meanwhile", Deadline);
        release.TrySetResult();
        await Eventually.UntilAsync(() => Uncommitted(queue, queue) == 0, "the rest once released", Deadline);
    }

    // Where Kafka differs from a queue broker: one partition is read by one member of the group, so a second consumer of
    // a one-partition queue stays idle (a standby that takes over when the first leaves). The conformance suite's
    // competing-consumer test passes because the queue has more partitions than it starts consumers.
    [Fact]
    public async Task CompetingConsumers_OnAOnePartitionQueue_OnlyOneDoesWork_AndTheOtherTakesOverWhenItStops()
    {
        var queue = Name("one-partition");
        if (MockCluster.IsMock)
        {
            MockCluster.CreateTopic(queue, 1);
        }

        var first = await CreateTransportAsync(o => { o.TopicPartitions = 1; o.AssignmentTimeout = TimeSpan.FromSeconds(1); });
        var second = await CreateTransportAsync(o => { o.TopicPartitions = 1; o.AssignmentTimeout = TimeSpan.FromSeconds(1); });
        var byConsumer = new ConcurrentDictionary<Guid, string>();
        var a = (KafkaConsumer)await first.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 4 }, (d, _) =>
        {
            byConsumer[d.Envelope.MessageId] = "a";
            return ValueTask.CompletedTask;
        });
        var b = (KafkaConsumer)Own(await second.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 4 }, (d, _) =>
        {
            byConsumer[d.Envelope.MessageId] = "b";
            return ValueTask.CompletedTask;
        }));

        var sent = Enumerable.Range(0, 20).Select(_ => NewEnvelope()).ToList();
        foreach (var envelope in sent)
        {
            await first.SendAsync(queue, envelope);
        }

        await Eventually.UntilAsync(() => sent.All(e => byConsumer.ContainsKey(e.MessageId)), "every message handled", Deadline);
        Assert.Single(byConsumer.Values.Distinct());
        Assert.Equal(1, a.Assignment.Count + b.Assignment.Count);

        // The working member leaves: the standby takes the partition from the committed offset.
        var worker = a.Assignment.Count == 1 ? a : b;
        await worker.DisposeAsync();
        var later = NewEnvelope();
        await second.SendAsync(queue, later);
        await Eventually.UntilAsync(() => byConsumer.ContainsKey(later.MessageId), "the standby handles what comes next", Deadline);
        Assert.NotEqual(byConsumer[sent[0].MessageId], byConsumer[later.MessageId]);
        Assert.Equal(21, byConsumer.Count);
        if (worker != a)
        {
            await a.DisposeAsync();
        }
    }

    [Fact]
    public async Task Restart_ResumesFromTheCommittedOffsets_WithoutHandlingAnythingAgain()
    {
        var queue = Name("restart");
        var transport = await CreateTransportAsync();
        var before = Enumerable.Range(0, 10).Select(i => NewEnvelope("k" + (i % 3))).ToList();
        foreach (var envelope in before)
        {
            await transport.SendAsync(queue, envelope);
        }

        var firstRun = new ConcurrentBag<Guid>();
        var consumer = await transport.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 3 }, (d, _) =>
        {
            firstRun.Add(d.Envelope.MessageId);
            return ValueTask.CompletedTask;
        });
        await Eventually.UntilAsync(() => firstRun.Count == before.Count, "the first run handles everything sent", Deadline);
        await consumer.StopAsync();
        await consumer.DisposeAsync();

        var after = Enumerable.Range(0, 5).Select(i => NewEnvelope("k" + i)).ToList();
        foreach (var envelope in after)
        {
            await transport.SendAsync(queue, envelope);
        }

        // A new process: another transport, same group.
        var restarted = await CreateTransportAsync();
        var secondRun = new ConcurrentBag<Guid>();
        Own(await restarted.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            secondRun.Add(d.Envelope.MessageId);
            return ValueTask.CompletedTask;
        }));
        var marker = NewEnvelope();
        await restarted.SendAsync(queue, marker);
        await Eventually.UntilAsync(() => secondRun.Contains(marker.MessageId) && after.All(e => secondRun.Contains(e.MessageId)), "the second run handles what came after", Deadline);
        await Eventually.UntilAsync(() => Uncommitted(queue, queue) == 0, "everything committed", Deadline);

        Assert.Equal(before.Select(e => e.MessageId).Order(), firstRun.Order());
        Assert.Equal(after.Select(e => e.MessageId).Append(marker.MessageId).Order(), secondRun.Order());
    }

    [Fact]
    public async Task ANewGroup_StartsWhereTheConsumersResetPolicySays_ToldToTheClientAtAssignment_Issue14()
    {
        // Herald gives the client a fresh partition's start at assignment (instead of the client's look-up after a back-off);
        // it must still be the reset policy's: the default (earliest) reads the backlog, a user's 'latest' skips it.
        var queue = Name("reset");
        var transport = await CreateTransportAsync();
        var backlog = NewEnvelope("same-key");
        await transport.SendAsync(queue, backlog);

        var latest = await CreateTransportAsync(o => o.ConfigureConsumer = c => c.AutoOffsetReset = Confluent.Kafka.AutoOffsetReset.Latest);
        var seenByLatest = new ConcurrentQueue<Guid>();
        Own(await latest.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            seenByLatest.Enqueue(d.Envelope.MessageId);
            return ValueTask.CompletedTask;
        }));
        var after = NewEnvelope("same-key");
        await transport.SendAsync(queue, after);

        // One key, one partition: had the consumer started at the beginning, the backlog would come first.
        await Eventually.UntilAsync(() => !seenByLatest.IsEmpty, "the latest group handles what is sent after it started", Deadline);
        Assert.Equal(after.MessageId, seenByLatest.First());

        var earliest = await CreateTransportAsync(o => o.GroupIdPrefix = "earliest-");
        var seenByEarliest = new ConcurrentQueue<Guid>();
        Own(await earliest.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            seenByEarliest.Enqueue(d.Envelope.MessageId);
            return ValueTask.CompletedTask;
        }));
        await Eventually.UntilAsync(() => seenByEarliest.Count >= 2, "the default group reads the backlog", Deadline);
        Assert.Equal([backlog.MessageId, after.MessageId], seenByEarliest.Take(2));
        Assert.DoesNotContain(backlog.MessageId, seenByLatest);
    }

    [Fact]
    public async Task APartitionReadWithoutARecord_KeepsItsStart_SoWhatIsWrittenWhileNoConsumerRuns_IsNotSkipped()
    {
        // Only settled records moved a partition's offset: one the group read while it was empty was never committed, so
        // the next member started it where the reset policy said (here the end, as a binding's start does), past what
        // had been written to it while no consumer ran.
        var queue = Name("empty-partition");
        MockCluster.CreateTopic(queue, 1);
        var transport = await CreateTransportAsync(o => o.ConfigureConsumer = c => c.AutoOffsetReset = Confluent.Kafka.AutoOffsetReset.Latest);
        var first = await transport.ConsumeAsync(queue, ConsumerOptions.Default, (_, _) => ValueTask.CompletedTask);
        Assert.NotEmpty(((KafkaConsumer)first).Assignment);
        await first.StopAsync();
        await first.DisposeAsync();

        var written = NewEnvelope();
        await transport.SendAsync(queue, written);
        var handled = new TaskCompletionSource<Guid>(TaskCreationOptions.RunContinuationsAsynchronously);
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            handled.TrySetResult(d.Envelope.MessageId);
            return ValueTask.CompletedTask;
        }));
        Assert.Equal(written.MessageId, await handled.Task.WaitAsync(Deadline));
    }

    [Fact]
    public async Task PollLoop_WhenTheAssignmentCallbackThrows_ResumesWithANewClient_AndHandlesWhatIsSentAfterwards()
    {
        // The poll thread ended for good on any exception but a consume error (6015): the consumer stayed silently stopped.
        var queue = Name("resume");
        var throws = 1;
        var transport = Own(new KafkaTransport(TestOptions(), TimeProvider.System, LoggerFactory!)
        {
            // Resolved in the assignment callback: a failing observer registration throws there once.
            ObserversSource = () => Interlocked.Exchange(ref throws, 0) == 1 ? throw new InvalidOperationException("assignment failed once") : [],
        });
        await transport.ConnectAsync();
        var handled = new ConcurrentBag<Guid>();
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            handled.Add(d.Envelope.MessageId);
            return ValueTask.CompletedTask;
        }));
        Assert.Equal(0, Volatile.Read(ref throws));

        var sent = NewEnvelope();
        await transport.SendAsync(queue, sent);
        await Eventually.UntilAsync(() => handled.Contains(sent.MessageId), "the message sent after the failed assignment", Deadline);
    }

    [Fact]
    public async Task StartPosition_Latest_SkipsTheBacklog_AndEarliest_ReplaysEverything()
    {
        var queue = Name("start");
        var transport = await CreateTransportAsync();
        var backlog = Enumerable.Range(0, 3).Select(_ => NewEnvelope()).ToList();
        foreach (var envelope in backlog)
        {
            await transport.SendAsync(queue, envelope);
        }

        var latest = await CreateTransportAsync(o => o.StartPosition = KafkaStartPosition.Latest);
        var seen = new ConcurrentQueue<Guid>();
        var consumer = await latest.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            seen.Enqueue(d.Envelope.MessageId);
            return ValueTask.CompletedTask;
        });
        var fresh = NewEnvelope();
        await transport.SendAsync(queue, fresh);
        await Eventually.UntilAsync(() => seen.Contains(fresh.MessageId), "the message sent after the start", Deadline);
        await consumer.DisposeAsync();
        Assert.Equal([fresh.MessageId], seen);

        var earliest = await CreateTransportAsync(o => o.StartPosition = KafkaStartPosition.Earliest);
        var replayed = new ConcurrentBag<Guid>();
        Own(await earliest.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            replayed.Add(d.Envelope.MessageId);
            return ValueTask.CompletedTask;
        }));
        await Eventually.UntilAsync(() => replayed.Count >= 4, "the replay of every record", Deadline);
        Assert.Equal(backlog.Select(e => e.MessageId).Append(fresh.MessageId).Order(), replayed.Order());
    }

    [Fact]
    public async Task StartPosition_Timestamp_StartsAtTheFirstRecordAtOrAfterIt()
    {
        var queue = Name("from-time");
        var transport = await CreateTransportAsync();
        await transport.SendAsync(queue, NewEnvelope());
        var old = DateTimeOffset.UtcNow.AddDays(-1);
        var future = DateTimeOffset.UtcNow.AddDays(1);

        if (MockCluster.IsMock)
        {
            // The mock answers every ListOffsets-by-time with the end of the partition, so a start in the past cannot be checked here.
            _output.WriteLine("Not checked on the mock cluster: it answers offsets-for-times with the log end; a start in the past is checked against a real cluster (HERALD_KAFKA_BOOTSTRAP).");
        }
        else
        {
            var fromYesterday = new ConcurrentBag<Guid>();
            Own(await (await CreateTransportAsync(o => { o.StartPosition = KafkaStartPosition.Timestamp; o.StartTimestamp = old; o.GroupIdPrefix = "yesterday-"; }))
                .ConsumeAsync(queue, ConsumerOptions.Default, (d, _) => { fromYesterday.Add(d.Envelope.MessageId); return ValueTask.CompletedTask; }));
            await Eventually.UntilAsync(() => fromYesterday.Count == 1, "the record written after yesterday", Deadline);
        }

        var fromTomorrow = new ConcurrentBag<Guid>();
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Own(await (await CreateTransportAsync(o => { o.StartPosition = KafkaStartPosition.Timestamp; o.StartTimestamp = future; o.GroupIdPrefix = "tomorrow-"; }))
            .ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
            {
                fromTomorrow.Add(d.Envelope.MessageId);
                arrived.TrySetResult();
                return ValueTask.CompletedTask;
            }));
        // The consumer resolves its start offset (the log end, for a time in the future) some time after it is given its
        // partitions, and nothing tells the test when: a marker sent before that is behind the start. So markers are sent
        // until one arrives; the record written before the start must never arrive.
        var markers = new List<Guid>();
        var deadline = DateTime.UtcNow + Deadline;
        while (fromTomorrow.IsEmpty)
        {
            Assert.True(DateTime.UtcNow < deadline, $"no record sent after the start arrived within {Deadline}");
            var marker = NewEnvelope();
            markers.Add(marker.MessageId);
            await transport.SendAsync(queue, marker);
            // Wait for any arrival, at most 2 s, before sending the next marker.
            await Task.WhenAny(arrived.Task, Task.Delay(TimeSpan.FromSeconds(2)));
        }

        Assert.All(fromTomorrow, id => Assert.Contains(id, markers));
    }
}
