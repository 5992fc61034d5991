using System.Globalization;
using System.Text;
using Amazon.SQS.Model;
using Herald.AmazonSqs.Transport;
using Herald.Conformance;
using Herald.Messages;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.AmazonSqs.Tests;

/// <summary>
/// A seeded model of FIFO queues (<c>FifoQueues</c>): keyed messages over a few groups (some sent twice with one id, some
/// delayed), each with an outcome its handler plays (ack; throw once; nack once with a delay and headers; throw once then
/// dead-letter; some held on a signal at their first delivery), consumed by one or two consumers of their own transports
/// (concurrency above one), stopped (abandoning or waiting) while handlers are held, and started again. The reference
/// model is what docs/sqs.md promises on FIFO: a duplicate by id within the window is dropped; every message ends acked
/// once or dead-lettered once, and is never delivered after that; a nack with delay on FIFO is a visibility change (back
/// no sooner than the delay, one receive higher, the nack's headers dropped); a delayed send is not handed out before it
/// is due; a dead letter carries its reason and the attempt it was made at; a stop hands back what it held, counted as a
/// receive; the key arrives as the group it was sent in; the queue is empty at the end. Order per group and one handler
/// per group are NOT promised with more than one handler ("it promises no order per key across handlers"; the emulator
/// does not lock a group either), so the model only reports how often a group ran on two handlers at once.
/// </summary>
public sealed class SqsFifoModelTests(ITestOutputHelper output) : SqsTestBase
{
    private static readonly TimeSpan NackDelay = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan SendDelay = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan Tolerance = TimeSpan.FromMilliseconds(100);
    private const string NackHeader = "model-nack";

    public static TheoryData<int> Seeds => [1, 2, 3, 4, 5, 6];

    private enum Fate
    {
        Acks,
        ThrowsOnce,
        NacksOnce,
        DeadLetters,
    }

    private enum Outcome
    {
        Acked,
        Threw,
        Nacked,
        DeadLettered,
        Aborted,
    }

    private sealed record Spec(int Seq, Envelope Envelope, string Key, Fate Fate, bool Duplicate, bool Holds, TimeSpan? Delay)
    {
        public Guid Id => Envelope.MessageId;

        public DateTimeOffset SentAt { get; set; }

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override string ToString() =>
            $"#{Seq} {Id.ToString()[^6..]} group {Key[^1..]} {Fate}" + (Duplicate ? " sent twice" : string.Empty) + (Holds ? " held" : string.Empty)
            + (Delay is { } d ? $" delay {d.TotalMilliseconds:0} ms" : string.Empty);
    }

    private sealed class Run(Spec spec, int consumer, int attempt, bool nackHeader, string? key, DateTimeOffset at)
    {
        public Spec Spec { get; } = spec;
        public int Consumer { get; } = consumer;
        public int Attempt { get; } = attempt;
        public bool NackHeader { get; } = nackHeader;
        public string? Key { get; } = key;
        public DateTimeOffset At { get; } = at;
        public DateTimeOffset? EndedAt { get; set; }
        public Outcome? Outcome { get; set; }
        public string? Reason { get; set; }

        public override string ToString() =>
            $"{Time(At)}..{(EndedAt is { } e ? Time(e) : "?")} consumer {Consumer} {Spec} attempt {Attempt}{(NackHeader ? " +nack header" : string.Empty)} -> {Outcome}";
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Model_FifoGroupsWithRetriesNacksDeadLettersAndStops_MatchTheDocumentedPromises(int seed)
    {
        var random = new Random(seed);
        var queue = Name("fifo-model");
        var log = new List<string>();
        var gate = new Lock();
        var runs = new List<Run>();
        var stops = new List<DateTimeOffset>();
        var active = new Dictionary<string, int>(StringComparer.Ordinal);
        var releasing = new HashSet<int>();
        var overlaps = 0;
        void Log(string line)
        {
            lock (gate)
            {
                log.Add($"{Time(DateTimeOffset.UtcNow)} {line}");
            }
        }

        // The plan.
        var groupPrefix = "g-" + Guid.NewGuid().ToString("N")[..6] + "-";
        var specs = new List<Spec>();
        for (var seq = 0; seq < 24; seq++)
        {
            var fate = random.Next(10) switch
            {
                < 4 => Fate.Acks,
                < 6 => Fate.ThrowsOnce,
                < 8 => Fate.NacksOnce,
                _ => Fate.DeadLetters,
            };
            var key = groupPrefix + random.Next(3).ToString(CultureInfo.InvariantCulture);
            specs.Add(new Spec(seq, NewEnvelope(body: $"{{\"seq\":{seq}}}", partitionKey: key), key, fate, random.Next(5) == 0, random.Next(6) == 0, random.Next(8) == 0 ? SendDelay : null));
        }

        if (!specs.Exists(s => s.Holds))
        {
            var picked = random.Next(specs.Count);
            specs[picked] = specs[picked] with { Holds = true };
        }

        var byId = specs.GroupBy(s => s.Id).ToDictionary(g => g.Key, g => g.First());
        specs = [.. byId.Values.OrderBy(s => s.Seq)];

        var consumerCount = 1 + (seed % 2);
        var transports = new List<AmazonSqsTransport>();
        var options = new List<ConsumerOptions>();
        for (var c = 0; c < consumerCount; c++)
        {
            transports.Add(await CreateTransportAsync(o => o.FifoQueues = true));
            var concurrency = 2 + random.Next(3);
            options.Add(new ConsumerOptions { MaxConcurrency = concurrency, Prefetch = concurrency + random.Next(4) });
        }

        async ValueTask HandleAsync(int consumer, Delivery delivery, CancellationToken cancellationToken)
        {
            var spec = byId[delivery.Envelope.MessageId];
            Run run;
            int done;
            bool hold;
            lock (gate)
            {
                run = new Run(spec, consumer, delivery.Envelope.DeliveryAttempt, delivery.Envelope.Headers.ContainsKey(NackHeader), delivery.Envelope.PartitionKey, DateTimeOffset.UtcNow);
                done = runs.Count(r => r.Spec == spec && r.Outcome is not null and not Outcome.Aborted);

                // A handler its consumer started as the consumer's stop began (the stop waits for it) is not held.
                hold = spec.Holds && done == 0 && !releasing.Contains(consumer);
                runs.Add(run);
                active[spec.Key] = active.GetValueOrDefault(spec.Key) + 1;
                if (active[spec.Key] > 1)
                {
                    overlaps++;
                }
            }

            try
            {
                if (hold)
                {
                    try
                    {
                        await spec.Release.Task.WaitAsync(cancellationToken);
                    }
                    catch (OperationCanceledException)
                    {
                        run.Outcome = Outcome.Aborted;
                        throw;
                    }
                }

                switch (spec.Fate, done)
                {
                    case (Fate.ThrowsOnce or Fate.DeadLetters, 0):
                        run.Outcome = Outcome.Threw;
                        throw new InvalidOperationException($"model failure of #{spec.Seq}");
                    case (Fate.NacksOnce, 0):
                        run.Outcome = Outcome.Nacked;
                        await delivery.NackAsync(NackDelay, new Dictionary<string, string>(StringComparer.Ordinal) { [NackHeader] = "1" }, CancellationToken.None);
                        break;
                    case (Fate.DeadLetters, _):
                        run.Reason = $"model dead letter of #{spec.Seq} at attempt {run.Attempt}";
                        run.Outcome = Outcome.DeadLettered;
                        await delivery.DeadLetterAsync(run.Reason, CancellationToken.None);
                        break;
                    default:
                        run.Outcome = Outcome.Acked;
                        await delivery.AckAsync(CancellationToken.None);
                        break;
                }
            }
            finally
            {
                lock (gate)
                {
                    run.EndedAt = DateTimeOffset.UtcNow;
                    active[spec.Key]--;
                }
            }
        }

        var consumers = new ITransportConsumer?[consumerCount];
        async Task StartAsync(int c)
        {
            consumers[c] = await transports[c].ConsumeAsync(queue, options[c], (d, ct) => HandleAsync(c, d, ct));
            Log($"consumer {c} started ({options[c].MaxConcurrency} handlers, prefetch {options[c].Prefetch})");
        }

        void Fail(string difference)
        {
            var text = new StringBuilder().Append(CultureInfo.InvariantCulture, $"seed {seed}: {difference}").AppendLine().AppendLine("operations:");
            lock (gate)
            {
                log.ForEach(l => text.AppendLine(l));
                text.AppendLine("handler runs:");
                runs.ForEach(r => text.AppendLine(r.ToString()));
            }

            Assert.Fail(text.ToString());
        }

        try
        {
            await transports[0].DeclareQueueAsync(queue);
            for (var c = 0; c < consumerCount; c++)
            {
                await StartAsync(c);
            }

            foreach (var spec in specs)
            {
                spec.SentAt = DateTimeOffset.UtcNow;
                var sendOptions = spec.Delay is { } delay ? new SendOptions { Delay = delay } : null;
                await transports[0].SendAsync(queue, spec.Envelope, sendOptions);
                Log($"sent {spec}");
                if (spec.Duplicate)
                {
                    // The same message again (its id, attempt 1) within SQS's five-minute deduplication window: dropped.
                    await transports[^1].SendAsync(queue, spec.Envelope, sendOptions);
                    Log($"sent #{spec.Seq} again");
                }
            }

            // Stops while handlers are held on their signals, each consumer started again after.
            var stopCount = 1 + random.Next(2);
            for (var s = 0; s < stopCount; s++)
            {
                Run? held = null;
                try
                {
                    await Eventually.UntilAsync(
                        () =>
                        {
                            lock (gate)
                            {
                                held = runs.Find(r => r.Spec.Holds && r.Outcome is null && r.EndedAt is null && !r.Spec.Release.Task.IsCompleted);
                                return held is not null;
                            }
                        },
                        "a handler held on its signal",
                        TimeSpan.FromSeconds(15));
                }
                catch (TimeoutException)
                {
                    Log("no handler held any more: no further stop");
                    break;
                }

                var c = held!.Consumer;
                var abandon = random.Next(2) == 0;
                Log($"stopping consumer {c} ({(abandon ? "abandoning its handlers" : "waiting for its handlers")}) while #{held.Spec.Seq} is held");
                lock (gate)
                {
                    stops.Add(DateTimeOffset.UtcNow);
                }

                if (abandon)
                {
                    using var now = new CancellationTokenSource();
                    await now.CancelAsync();
                    await consumers[c]!.StopAsync(now.Token);
                }
                else
                {
                    var stopping = consumers[c]!.StopAsync();
                    List<Run> heldThere;
                    lock (gate)
                    {
                        releasing.Add(c);
                        heldThere = runs.FindAll(r => r.Consumer == c && r.Spec.Holds && r.EndedAt is null);
                    }

                    heldThere.ForEach(r => r.Spec.Release.TrySetResult());
                    try
                    {
                        await stopping.WaitAsync(TimeSpan.FromSeconds(60));
                    }
                    catch (TimeoutException)
                    {
                        Fail($"consumer {c} did not stop within 60 s of its held handlers' release");
                    }

                    lock (gate)
                    {
                        releasing.Remove(c);
                    }
                }

                await consumers[c]!.DisposeAsync();
                lock (gate)
                {
                    stops.Add(DateTimeOffset.UtcNow);
                }

                Log($"consumer {c} stopped");
                await StartAsync(c);
            }

            specs.ForEach(spec => spec.Release.TrySetResult());
            Log("every held handler released");

            try
            {
                await Eventually.UntilAsync(
                    () =>
                    {
                        lock (gate)
                        {
                            return specs.TrueForAll(spec => runs.Exists(r => r.Spec == spec && r.EndedAt is not null && r.Outcome is Outcome.Acked or Outcome.DeadLettered));
                        }
                    },
                    "every message acked or dead-lettered",
                    TimeSpan.FromSeconds(20));
            }
            catch (TimeoutException ex)
            {
                List<Spec> open;
                lock (gate)
                {
                    open = specs.FindAll(spec => !runs.Exists(r => r.Spec == spec && r.Outcome is Outcome.Acked or Outcome.DeadLettered));
                }

                Fail($"{ex.Message} Open: {string.Join(", ", open)}");
            }

            // Anything left (a duplicate that was not dropped) is received by the consumers still running, or found below.
            for (var c = 0; c < consumerCount; c++)
            {
                await consumers[c]!.StopAsync();
                await consumers[c]!.DisposeAsync();
                consumers[c] = null;
            }

            Log("consumers stopped at the end");
        }
        finally
        {
            specs.ForEach(spec => spec.Release.TrySetResult());
            foreach (var consumer in consumers)
            {
                if (consumer is not null)
                {
                    await consumer.DisposeAsync();
                }
            }
        }

        var deadLetters = new List<NativeDeadLetter>();
        await ((INativeDeadLetterSource)transports[0]).DrainDeadLettersAsync(queue, (d, _) =>
        {
            deadLetters.Add(d);
            return ValueTask.CompletedTask;
        });

        using var client = SqsEmulator.NewClient();
        var left = await client.ReceiveMessageAsync(new ReceiveMessageRequest
        {
            QueueUrl = await transports[0].QueueUrlAsync(queue, CancellationToken.None),
            MaxNumberOfMessages = 10,
            WaitTimeSeconds = 1,
            MessageAttributeNames = ["All"],
        });

        var failures = new List<string>();
        void Expect(bool condition, string difference)
        {
            if (!condition)
            {
                failures.Add(difference);
            }
        }

        Expect(left.Messages is not { Count: > 0 }, $"the queue still holds {string.Join(", ", (left.Messages ?? []).Select(m => m.MessageAttributes.TryGetValue("ce_id", out var id) ? id.StringValue[^6..] : m.MessageId))} at the end");
        var strangers = deadLetters.Where(d => !byId.ContainsKey(d.Envelope.MessageId)).ToList();
        Expect(strangers.Count == 0, $"{strangers.Count} dead letters of messages never sent");
        var lateReceives = 0;
        foreach (var spec in specs)
        {
            var own = runs.Where(r => r.Spec == spec).OrderBy(r => r.At).ToList();
            var settled = own.Where(r => r.Outcome is not Outcome.Aborted).ToList();
            var expected = spec.Fate switch
            {
                Fate.Acks => [Outcome.Acked],
                Fate.ThrowsOnce => [Outcome.Threw, Outcome.Acked],
                Fate.NacksOnce => [Outcome.Nacked, Outcome.Acked],
                _ => new[] { Outcome.Threw, Outcome.DeadLettered },
            };
            Expect(settled.Select(r => r.Outcome!.Value).SequenceEqual(expected),
                $"{spec}: runs ended {string.Join(", ", settled.Select(r => r.Outcome))}, not {string.Join(", ", expected)} (a duplicate delivered, or a delivery after its final outcome)");
            Expect(own.Count == 0 || own[^1].Outcome is Outcome.Acked or Outcome.DeadLettered, $"{spec}: delivered again after its final outcome");
            Expect(own.TrueForAll(r => r.Key == spec.Key), $"{spec}: delivered with the key {own.Find(r => r.Key != spec.Key)?.Key}, not the group it was sent in");
            if (own.Count == 0)
            {
                continue;
            }

            bool StopBetween(DateTimeOffset from, DateTimeOffset to) => stops.Exists(t => t >= from && t <= to);

            // A receive SQS counted without a handler run: a stop's hand-back, or a stopped consumer's last long poll, which
            // is not cut off and hands back what it brings, whenever it returns (at most ten messages each).
            void Uncounted(int extra, DateTimeOffset from, DateTimeOffset to, string what)
            {
                if (extra > 0 && !StopBetween(from, to))
                {
                    lateReceives += extra;
                    Expect(stops.Exists(t => t <= to), $"{spec}: {what}, with no stop before");
                }
            }

            if (spec.Delay is null)
            {
                Uncounted(own[0].Attempt - 1, spec.SentAt, own[0].At, $"first delivered at attempt {own[0].Attempt}");
            }

            if (spec.Delay is { } due)
            {
                Expect(own[0].At - spec.SentAt >= due - Tolerance, $"{spec}: first delivered {(own[0].At - spec.SentAt).TotalMilliseconds:0} ms after the send, before it was due");
            }

            for (var i = 1; i < own.Count; i++)
            {
                var (before, after) = (own[i - 1], own[i]);
                Expect(after.Attempt > before.Attempt, $"{spec}: delivered at attempt {after.Attempt} after attempt {before.Attempt}");
                if (before.Outcome != Outcome.Aborted)
                {
                    Uncounted(after.Attempt - before.Attempt - 1, before.At, after.At, $"delivered at attempt {after.Attempt} after attempt {before.Attempt}");
                }
                if (before.Outcome == Outcome.Nacked)
                {
                    Expect(after.At - before.At >= NackDelay - Tolerance,
                        $"{spec}: back {(after.At - before.At).TotalMilliseconds:0} ms after its nack with delay {NackDelay.TotalMilliseconds:0} ms");
                    Expect(!after.NackHeader, $"{spec}: the nack's headers came back on FIFO (a copy was sent, losing its place in the group)");
                }
            }

            var letters = deadLetters.Where(d => d.Envelope.MessageId == spec.Id).ToList();
            if (spec.Fate == Fate.DeadLetters)
            {
                var run = own.Find(r => r.Outcome == Outcome.DeadLettered);
                Expect(letters.Count == 1, $"{spec}: {letters.Count} dead letters, not one");
                if (letters.Count == 1 && run is not null)
                {
                    Expect(letters[0].Reason == run.Reason, $"{spec}: dead letter's reason '{letters[0].Reason}', not '{run.Reason}'");
                    Expect(letters[0].Envelope.DeliveryAttempt == run.Attempt, $"{spec}: dead letter counts {letters[0].Envelope.DeliveryAttempt} attempts, it was made at attempt {run.Attempt}");
                    Expect(letters[0].Envelope.PartitionKey == spec.Key, $"{spec}: dead letter's key {letters[0].Envelope.PartitionKey}");
                }
            }
            else
            {
                Expect(letters.Count == 0, $"{spec}: dead-lettered {letters.Count} times");
            }
        }

        Expect(lateReceives <= 10 * (stops.Count / 2), $"{lateReceives} receives counted without a run or a stop between, more than the ten that each stopped consumer's last long poll may take");
        if (failures.Count > 0)
        {
            Fail(string.Join(Environment.NewLine, failures));
        }

        output.WriteLine($"seed {seed}: {specs.Count} messages ({string.Join(", ", specs.GroupBy(s => s.Fate).Select(g => $"{g.Count()} {g.Key}"))}), "
            + $"{specs.Count(s => s.Duplicate)} sent twice, {specs.Count(s => s.Delay is not null)} delayed, {specs.Count(s => s.Holds)} held, {consumerCount} consumer(s), "
            + $"{stops.Count / 2} stop(s), {runs.Count} handler runs, {runs.Count(r => r.Outcome == Outcome.Aborted)} aborted, {lateReceives} late receive(s); a group on two handlers at once {overlaps} time(s) (not promised against)");
    }

    private static string Time(DateTimeOffset at) => at.ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture);
}
