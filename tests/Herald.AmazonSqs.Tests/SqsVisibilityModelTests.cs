using System.Globalization;
using System.Text;
using Amazon.SQS.Model;
using Herald.AmazonSqs.Transport;
using Herald.Conformance;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.AmazonSqs.Tests;

/// <summary>
/// A seeded model of standard queues under a short visibility timeout (3 s, the least Herald takes), consumed by two competing Herald hosts (the whole
/// pipeline, each on a transport of its own, one dead-letter store shared as a database would be): messages whose handlers
/// succeed, fail once, always fail, or run for two to three and a half visibility timeouts; some sent with a delay; messages
/// a foreign client writes malformed (body or attributes); and one host stopped (abandoning its held handlers, or waiting
/// for them) while a long handler runs on it, then started again. What it checks, from docs/sqs.md and the architecture:
/// a message whose handler runs is never handled by another consumer meanwhile (its visibility is renewed, through a
/// graceful stop too); every message is handled once or dead-lettered in Herald's store once its handler failed every
/// attempt (with the last error and attempt); nothing a handler did not fail is dead-lettered (a stop's hand-back counts a
/// receive, so it may only raise the attempt); attempts follow ApproximateReceiveCount; a delayed send is not handled
/// before it is due; malformed input is dead-lettered with a reason, never handled and never looping; and the queue and its
/// dead-letter queue end empty. The FIFO model (SqsFifoModelTests) and the transport pipeline model (TransportConformance)
/// cover groups, nacks and restarts of one host; this one covers leases held across several visibility timeouts and hosts.
/// </summary>
public sealed class SqsVisibilityModelTests(ITestOutputHelper output) : SqsTestBase
{
    private const string WorkType = "sqs-visibility-model-work";
    private const int DelayedRetries = 2;
    private const int MaxAttempts = 1 + DelayedRetries;
    private static readonly TimeSpan Visibility = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan RetryDelay = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan Tolerance = TimeSpan.FromMilliseconds(100);

    public static TheoryData<int> Seeds => [1, 2, 3, 4];

    private enum Fate
    {
        Succeeds,
        FailsOnce,
        AlwaysFails,
        Holds,
    }

    private enum Malformation
    {
        BodyNotJson,
        NoType,
        UnknownType,
        IdNotGuid,
        TimeNotTime,
        HeraldAttributeNotJson,
        Base64BodyNotBase64,
    }

    /// <summary>The work the model sends (its body is <c>{"seq":n}</c>).</summary>
    [MessageType(WorkType)]
    public sealed record Work(int Seq);

    private sealed record Spec(int Seq, Guid Id, Fate Fate, TimeSpan Hold, TimeSpan? Delay)
    {
        public DateTimeOffset SentAt { get; set; }

        /// <summary>Stops of a host that began while the message was not settled: each may count a receive no handler ran.</summary>
        public int StopsMet { get; set; }

        public override string ToString() =>
            $"#{Seq} {Id.ToString()[^6..]} {Fate}" + (Fate == Fate.Holds ? $" {Hold.TotalMilliseconds:0} ms" : string.Empty)
            + (Delay is { } d ? $" delay {d.TotalMilliseconds:0} ms" : string.Empty) + (StopsMet > 0 ? $" met {StopsMet} stop(s)" : string.Empty);
    }

    private sealed class Run(Spec spec, int host, int attempt, int deliveryAttempt, DateTimeOffset at)
    {
        public Spec Spec { get; } = spec;
        public int Host { get; } = host;
        public int Attempt { get; } = attempt;
        public int DeliveryAttempt { get; } = deliveryAttempt;
        public DateTimeOffset At { get; } = at;
        public DateTimeOffset? EndedAt { get; set; }
        public string? Error { get; set; }
        public bool Aborted { get; set; }
        public bool Succeeded => EndedAt is not null && Error is null && !Aborted;

        public override string ToString() =>
            $"{Time(At)}..{(EndedAt is { } e ? Time(e) : "?")} host {Host} {Spec} attempt {Attempt} (delivery {DeliveryAttempt}) -> "
            + (Aborted ? "aborted" : Error is null ? (EndedAt is null ? "running" : "ok") : "threw");
    }

    /// <summary>What the handlers of every host ran, and each time a message was run while another run of it had not ended.</summary>
    private sealed class Recorder
    {
        public Lock Gate { get; } = new();
        public List<Run> Runs { get; } = [];
        public List<string> Overlaps { get; } = [];
        public List<string> Strangers { get; } = [];
        public Dictionary<int, Spec> BySeq { get; } = [];
        public int Host { get; set; }
        public List<string> Log { get; } = [];

        public void Note(string line)
        {
            lock (Gate)
            {
                Log.Add($"{Time(DateTimeOffset.UtcNow)} {line}");
            }
        }
    }

    private sealed class WorkHandler(Recorder recorder, HostIndex host) : IMessageHandler<Work>
    {
        public async ValueTask HandleAsync(Work message, MessageContext context, CancellationToken cancellationToken)
        {
            Run run;
            lock (recorder.Gate)
            {
                if (!recorder.BySeq.TryGetValue(message.Seq, out var spec) || spec.Id != context.Envelope.MessageId)
                {
                    recorder.Strangers.Add($"{context.Envelope.MessageId} seq {message.Seq}");
                    return;
                }

                run = new Run(spec, host.Value, context.Attempt, context.Envelope.DeliveryAttempt, DateTimeOffset.UtcNow);
                if (recorder.Runs.Find(r => r.Spec == spec && r.EndedAt is null) is { } other)
                {
                    recorder.Overlaps.Add($"{Time(run.At)} {spec} started on host {run.Host} (attempt {run.Attempt}) while its run on host {other.Host} since {Time(other.At)} (attempt {other.Attempt}) had not ended");
                }

                recorder.Runs.Add(run);
            }

            try
            {
                switch (run.Spec.Fate)
                {
                    case Fate.Holds:
                        await Task.Delay(run.Spec.Hold, TimeProvider.System, cancellationToken);
                        break;
                    case Fate.FailsOnce when run.Attempt == 1:
                    case Fate.AlwaysFails:
                        run.Error = $"model failure of #{run.Spec.Seq} at attempt {run.Attempt}";
                        throw new InvalidOperationException(run.Error);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                run.Aborted = true;
                throw;
            }
            finally
            {
                lock (recorder.Gate)
                {
                    run.EndedAt = DateTimeOffset.UtcNow;
                }
            }
        }
    }

    private sealed record HostIndex(int Value);

    private sealed class Hosts(SqsVisibilityModelTests test, string queue, Recorder recorder, InMemoryDeadLetterStore deadLetters, TestOutputLogger hostLog)
    {
        public IHost?[] Running { get; } = new IHost?[2];

        public async Task StartAsync(int index, TimeSpan shutdownTimeout)
        {
            var transport = await test.CreateTransportAsync(o =>
            {
                o.VisibilityTimeout = Visibility;
                o.WaitTime = TimeSpan.FromSeconds(1);
            });
            var builder = Host.CreateApplicationBuilder();
            builder.Logging.ClearProviders();
            builder.Logging.AddProvider(hostLog);
            builder.Services.AddSingleton(recorder);
            builder.Services.AddSingleton(new HostIndex(index));
            builder.Services.AddHerald(h => h
                .Configure(o =>
                {
                    o.EndpointName = queue;
                    o.MaxConcurrency = 3;
                    o.Prefetch = 4;
                    o.ShutdownTimeout = shutdownTimeout;
                })
                .AddMessageType<Work>()
                .AddHandler<WorkHandler>(ServiceLifetime.Singleton)
                .ConfigureRetries(r => r.Immediate(0).Delayed(DelayedRetries, RetryDelay, RetryDelay))
                .ConfigureDeadLetters(d => d.DrainInterval = TimeSpan.FromSeconds(1)));
            builder.Services.Replace(ServiceDescriptor.Singleton<ITransport>(transport));
            builder.Services.Replace(ServiceDescriptor.Singleton<IDeadLetterStore>(deadLetters));
            var host = builder.Build();
            await host.StartAsync();
            Running[index] = host;
            recorder.Note($"host {index} started (shutdown timeout {shutdownTimeout.TotalMilliseconds:0} ms)");
        }

        public async Task StopAsync(int index)
        {
            if (Running[index] is { } host)
            {
                Running[index] = null;
                await host.StopAsync();
                host.Dispose();
                recorder.Note($"host {index} stopped");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Model_LongHandlersStopsAndMalformedInputOnTwoHosts_KeepTheVisibilityPromises(int seed)
    {
        var random = new Random(seed);
        var queue = Name("vis-model");
        var recorder = new Recorder();
        var deadLetters = new InMemoryDeadLetterStore();
        var hostLog = new TestOutputLogger();
        var hosts = new Hosts(this, queue, recorder, deadLetters, hostLog);
        output.WriteLine($"seed {seed}: the emulator counts every visibility change (each renewal) as a receive for its redrive policy, so MaxReceiveCount stays 1000 and SQS's own redrive is not part of this model (SqsTransportTests covers it with MaxReceiveCount 2).");

        // The plan.
        var specs = new List<Spec>();
        for (var seq = 0; seq < 14; seq++)
        {
            var fate = random.Next(10) switch
            {
                < 3 => Fate.Succeeds,
                < 5 => Fate.FailsOnce,
                < 7 => Fate.AlwaysFails,
                _ => Fate.Holds,
            };
            var hold = TimeSpan.FromMilliseconds(6500 + random.Next(3500));
            TimeSpan? delay = random.Next(5) == 0 ? TimeSpan.FromSeconds(1 + random.Next(2)) : null;
            specs.Add(new Spec(seq, Guid.CreateVersion7(), fate, hold, delay));
        }

        if (!specs.Exists(s => s.Fate == Fate.Holds && s.Delay is null))
        {
            specs[0] = specs[0] with { Fate = Fate.Holds, Delay = null };
        }

        specs.ForEach(s => recorder.BySeq[s.Seq] = s);
        var malformed = Enum.GetValues<Malformation>().Select(m => (What: m, Id: Guid.CreateVersion7())).ToList();
        var abandon = random.Next(2) == 0;

        var failures = new List<string>();
        void Expect(bool condition, string difference)
        {
            if (!condition)
            {
                failures.Add(difference);
            }
        }

        void Fail(string difference)
        {
            var text = new StringBuilder().Append(CultureInfo.InvariantCulture, $"seed {seed}: {difference}").AppendLine().AppendLine("operations:");
            lock (recorder.Gate)
            {
                recorder.Log.ForEach(l => text.AppendLine(l));
                text.AppendLine("handler runs:");
                recorder.Runs.OrderBy(r => r.At).ToList().ForEach(r => text.AppendLine(r.ToString()));
            }

            text.AppendLine("host log (warnings):").AppendLine(hostLog.ToString());
            Assert.Fail(text.ToString());
        }

        var sender = await CreateTransportAsync(o => o.VisibilityTimeout = Visibility);
        await sender.DeclareQueueAsync(queue);
        var queueUrl = await sender.QueueUrlAsync(queue, CancellationToken.None);
        var deadLetterUrl = await sender.DeadLetterQueueUrlAsync(queue, CancellationToken.None);
        using var client = SqsEmulator.NewClient();
        try
        {
            await hosts.StartAsync(0, abandon ? TimeSpan.FromMilliseconds(300) : TimeSpan.FromSeconds(20));
            await hosts.StartAsync(1, TimeSpan.FromSeconds(20));

            var malformedAt = random.Next(specs.Count);
            for (var i = 0; i < specs.Count; i++)
            {
                if (i == malformedAt)
                {
                    foreach (var (what, id) in malformed)
                    {
                        await client.SendMessageAsync(Malformed(queueUrl, what, id));
                        recorder.Note($"sent malformed {what} {id.ToString()[^6..]}");
                    }
                }

                var spec = specs[i];
                spec.SentAt = DateTimeOffset.UtcNow;
                var envelope = NewEnvelope(WorkType, $"{{\"seq\":{spec.Seq}}}") with { MessageId = spec.Id };
                await sender.SendAsync(queue, envelope, spec.Delay is { } d ? new SendOptions { Delay = d } : null);
                recorder.Note($"sent {spec}");
            }

            // A stop of host 0 while a long handler runs on it: abandoning its handlers (handed back, a receive counted) or
            // waiting for them (their visibility renewed through the stop).
            Run? held = null;
            try
            {
                await Eventually.UntilAsync(
                    () =>
                    {
                        lock (recorder.Gate)
                        {
                            held = recorder.Runs.Find(r => r.Host == 0 && r.Spec.Fate == Fate.Holds && r.EndedAt is null && DateTimeOffset.UtcNow - r.At > Visibility);
                            return held is not null;
                        }
                    },
                    "a long handler on host 0 past one visibility timeout",
                    TimeSpan.FromSeconds(15));
            }
            catch (TimeoutException)
            {
                recorder.Note("no long handler ran on host 0: host 0 stopped all the same");
            }

            recorder.Note($"stopping host 0 ({(abandon ? "abandoning" : "waiting for")} its handlers){(held is null ? string.Empty : $" while {held.Spec} runs on it")}");
            lock (recorder.Gate)
            {
                var settled = recorder.Runs.Where(r => r.Succeeded).Select(r => r.Spec).ToHashSet();
                specs.Where(s => !settled.Contains(s)).ToList().ForEach(s => s.StopsMet++);
            }

            await hosts.StopAsync(0);
            await hosts.StartAsync(0, TimeSpan.FromSeconds(20));

            try
            {
                await Eventually.UntilAsync(
                    async () =>
                    {
                        var letters = await deadLetters.ListAsync(new DeadLetterQuery { Endpoint = queue, Limit = DeadLetterQuery.MaxLimit });
                        var dead = letters.Select(l => l.Envelope.MessageId).ToHashSet();
                        lock (recorder.Gate)
                        {
                            return letters.Count >= specs.Count(s => s.Fate == Fate.AlwaysFails) + malformed.Count
                                && specs.TrueForAll(s => dead.Contains(s.Id) || recorder.Runs.Exists(r => r.Spec == s && r.Succeeded));
                        }
                    },
                    "every message handled or dead-lettered",
                    TimeSpan.FromSeconds(40));
            }
            catch (TimeoutException ex)
            {
                Fail(ex.Message);
            }

            await hosts.StopAsync(0);
            await hosts.StopAsync(1);
        }
        finally
        {
            await hosts.StopAsync(0);
            await hosts.StopAsync(1);
        }

        // The end state: nothing visible, in flight or delayed, in the queue or its dead-letter queue. Deletes are batched, so
        // the counts may lag the last settlement a little.
        async Task<string> CountsAsync(string url)
        {
            var attributes = await client.GetQueueAttributesAsync(url, ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]);
            return attributes.ApproximateNumberOfMessages + attributes.ApproximateNumberOfMessagesNotVisible + attributes.ApproximateNumberOfMessagesDelayed == 0
                ? string.Empty
                : $"{attributes.ApproximateNumberOfMessages} visible, {attributes.ApproximateNumberOfMessagesNotVisible} in flight, {attributes.ApproximateNumberOfMessagesDelayed} delayed";
        }

        string left = "", leftDead = "";
        try
        {
            await Eventually.UntilAsync(
                async () =>
                {
                    left = await CountsAsync(queueUrl);
                    leftDead = await CountsAsync(deadLetterUrl);
                    return left.Length == 0 && leftDead.Length == 0;
                },
                "both queues empty",
                TimeSpan.FromSeconds(5));
        }
        catch (TimeoutException)
        {
            Expect(left.Length == 0, $"the queue holds {left} at the end");
            Expect(leftDead.Length == 0, $"the dead-letter queue holds {leftDead} at the end (redriven, or a fallback copy not drained)");
        }

        var stored = await deadLetters.ListAsync(new DeadLetterQuery { Endpoint = queue, Limit = DeadLetterQuery.MaxLimit });
        List<Run> runs;
        lock (recorder.Gate)
        {
            runs = [.. recorder.Runs];
            recorder.Overlaps.ForEach(o => failures.Add($"handled by two consumers at once: {o}"));
            recorder.Strangers.ForEach(s => failures.Add($"a handler ran a message the model never sent: {s}"));
        }

        foreach (var spec in specs)
        {
            var own = runs.Where(r => r.Spec == spec).OrderBy(r => r.At).ToList();
            var letters = stored.Where(l => l.Envelope.MessageId == spec.Id).ToList();
            var successes = own.Count(r => r.Succeeded);
            var failed = own.Count(r => r.Error is not null);
            for (var i = 1; i < own.Count; i++)
            {
                Expect(spec.StopsMet > 0 ? own[i].Attempt >= own[i - 1].Attempt : own[i].Attempt == own[i - 1].Attempt + 1,
                    $"{spec}: run {i + 1} at attempt {own[i].Attempt} after attempt {own[i - 1].Attempt}");
            }

            Expect(own.TrueForAll(r => r.Attempt == Math.Max(1, r.DeliveryAttempt)), $"{spec}: an attempt that is not its delivery's receive count");
            Expect(own.Count == 0 || own[0].Attempt == 1 || spec.StopsMet > 0, $"{spec}: first ran at attempt {own.FirstOrDefault()?.Attempt}");
            if (spec.Delay is { } delay && own.Count > 0)
            {
                Expect(own[0].At - spec.SentAt >= delay - Tolerance, $"{spec}: first ran {(own[0].At - spec.SentAt).TotalMilliseconds:0} ms after its send, before its delay");
            }

            if (spec.Fate == Fate.AlwaysFails)
            {
                Expect(successes == 0, $"{spec}: handled {successes} times");
                Expect(letters.Count == 1, $"{spec}: dead-lettered {letters.Count} times, not once");
                Expect(failed <= MaxAttempts, $"{spec}: failed {failed} times, more than MaxAttempts {MaxAttempts}");
                Expect(spec.StopsMet > 0 || failed == MaxAttempts, $"{spec}: failed {failed} times, not MaxAttempts {MaxAttempts}, meeting no stop");
                if (letters.Count == 1 && own.FindLast(r => r.Error is not null) is { } last)
                {
                    Expect(letters[0].Cause == DeadLetterCause.RetriesExhausted, $"{spec}: dead-lettered as {letters[0].Cause}");
                    Expect(letters[0].ErrorMessage == last.Error, $"{spec}: dead letter says '{letters[0].ErrorMessage}', its last run threw '{last.Error}'");
                    Expect(letters[0].AttemptCount == last.Attempt, $"{spec}: dead letter counts {letters[0].AttemptCount} attempts, its last run was attempt {last.Attempt}");
                }
                else if (letters.Count == 1)
                {
                    failures.Add($"{spec}: dead-lettered though no handler run of it failed");
                }
            }
            else
            {
                Expect(successes == 1, $"{spec}: handled {successes} times, not once");
                Expect(letters.Count == 0, $"{spec}: dead-lettered ({string.Join("; ", letters.Select(l => $"{l.Cause}: {l.ErrorMessage}"))}) though its handler did not fail every attempt");
                Expect(own.Count == 0 || own[^1].Succeeded, $"{spec}: ran again after it was handled");
                Expect(spec.StopsMet > 0 || own.Count == (spec.Fate == Fate.FailsOnce ? 2 : 1), $"{spec}: ran {own.Count} times, meeting no stop");
            }
        }

        var known = specs.Select(s => s.Id).ToHashSet();
        var foreign = stored.Where(l => !known.Contains(l.Envelope.MessageId)).ToList();
        foreach (var (what, id) in malformed)
        {
            // A message whose id is not a Guid is stored under another (hashed, or SQS's): found by elimination below.
            if (what == Malformation.IdNotGuid)
            {
                continue;
            }

            var letters = foreign.Where(l => l.Envelope.MessageId == id).ToList();
            Expect(letters.Count == 1, $"malformed {what} {id.ToString()[^6..]}: dead-lettered {letters.Count} times, not once");
            foreach (var letter in letters)
            {
                Expect(letter.Cause is DeadLetterCause.Undecodable or DeadLetterCause.UnknownMessageType or DeadLetterCause.InvalidEnvelope && !string.IsNullOrWhiteSpace(letter.ErrorMessage),
                    $"malformed {what}: dead-lettered as {letter.Cause} with the reason '{letter.ErrorMessage}'");
            }
        }

        var ids = malformed.Select(m => m.Id).ToHashSet();
        var unnamed = foreign.Where(l => !ids.Contains(l.Envelope.MessageId)).ToList();
        Expect(unnamed.Count == 1 && unnamed[0].Cause == DeadLetterCause.Undecodable && !string.IsNullOrWhiteSpace(unnamed[0].ErrorMessage),
            $"malformed {Malformation.IdNotGuid}: {unnamed.Count} dead letters under ids the model did not send ({string.Join("; ", unnamed.Select(l => $"{l.Cause}: {l.ErrorMessage}"))}), not one Undecodable with a reason");

        if (failures.Count > 0)
        {
            Fail(string.Join(Environment.NewLine, failures));
        }

        output.WriteLine($"seed {seed}: {specs.Count} messages ({string.Join(", ", specs.GroupBy(s => s.Fate).Select(g => $"{g.Count()} {g.Key}"))}), "
            + $"{specs.Count(s => s.Delay is not null)} delayed, {malformed.Count} malformed, host 0 stopped {(abandon ? "abandoning" : "waiting for")} its handlers"
            + $"{(runs.Exists(r => r.Aborted) ? $" ({runs.Count(r => r.Aborted)} aborted)" : string.Empty)}, {specs.Count(s => s.StopsMet > 0)} unsettled at the stop, {runs.Count} handler runs, "
            + $"longest run {runs.Where(r => r.EndedAt is not null).Select(r => (r.EndedAt!.Value - r.At).TotalMilliseconds).DefaultIfEmpty().Max():0} ms under a {Visibility.TotalMilliseconds:0} ms visibility timeout.");
    }

    /// <summary>A message a foreign client writes, broken in one way (the rest as Herald writes it).</summary>
    private static SendMessageRequest Malformed(string queueUrl, Malformation what, Guid id)
    {
        var attributes = new Dictionary<string, MessageAttributeValue>(StringComparer.Ordinal)
        {
            ["ce_specversion"] = Text("1.0"),
            ["ce_id"] = Text(what == Malformation.IdNotGuid ? "order-" + id.ToString("N")[..8] : id.ToString()),
            ["ce_type"] = Text(what == Malformation.UnknownType ? "sqs-visibility-model-nobody-knows" : WorkType),
            ["ce_time"] = Text(what == Malformation.TimeNotTime ? "the day after tomorrow" : DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture)),
            ["content-type"] = Text("application/json"),
        };
        if (what == Malformation.NoType)
        {
            attributes.Remove("ce_type");
        }

        if (what == Malformation.HeraldAttributeNotJson)
        {
            attributes["herald"] = Text("{\"headers\":[1,2");
        }

        if (what == Malformation.Base64BodyNotBase64)
        {
            attributes["herald"] = Text("{\"body\":\"base64\"}");
        }

        return new SendMessageRequest
        {
            QueueUrl = queueUrl,
            MessageBody = what switch
            {
                Malformation.BodyNotJson => "{\"seq\": not json",
                Malformation.Base64BodyNotBase64 => "*** not base64 ***",
                _ => "{\"seq\":-1}",
            },
            MessageAttributes = attributes,
        };
    }

    private static MessageAttributeValue Text(string value) => new() { DataType = "String", StringValue = value };

    private static string Time(DateTimeOffset at) => at.ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture);
}
