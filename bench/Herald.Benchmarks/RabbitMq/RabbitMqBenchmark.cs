using System.Globalization;
using Herald.Benchmarks.Harness;
using Herald.RabbitMQ.Transport;

namespace Herald.Benchmarks.RabbitMq;

/// <summary>
/// RabbitMQ publish (persistent, confirmed) and consume (manual ack, prefetch 100) throughput (issues 5 and 9): Herald.RabbitMQ
/// against the bare RabbitMQ.Client 7 and MassTransit 8's RabbitMQ transport, on the same broker in one process. Headline
/// ratios come only from like-for-like pairs: the same durability and confirms when publishing, the same ack mode and
/// body decoding when consuming.
/// </summary>
internal sealed class RabbitMqBenchmark : IBenchmark
{
    private const double TargetVsRaw = 0.95;

    // Deliveries per multiple ack of the raw batched baseline: what Herald coalesces by default at this prefetch.
    private const int AckBatch = BrokerWorkload.Prefetch / 4;

    /// <summary>The like-for-like pairs the headline ratios and targets come from.</summary>
    private static readonly Comparison[] Comparisons =
    [
        new("publish", "persistent, confirmed, mandatory", HeraldRabbitMqContender.AckPerMessage, RawRabbitMqContender.AckPerMessage, TargetVsRaw, false),
        new("publish", "persistent, confirmed", HeraldRabbitMqContender.AckPerMessage, MassTransitRabbitMqContender.ContenderName, 1.0, true),
        new("consume", "ack per message, body decoded", HeraldRabbitMqContender.AckPerMessage, RawRabbitMqContender.AckPerMessage, TargetVsRaw, false),
        new("consume", "batched acks, body decoded", HeraldRabbitMqContender.CoalescedAcks, RawRabbitMqContender.AcksOf(AckBatch), TargetVsRaw, false),
        new("consume", "ack per message, body decoded", HeraldRabbitMqContender.AckPerMessage, MassTransitRabbitMqContender.ContenderName, 1.0, true),
    ];

    // The Erlang VM running RabbitMQ: its CPU time per message is the broker's cost of a contender's messages.
    private const string Broker = "beam.smp";

    public string Name => "rabbitmq";

    public string Description => "RabbitMQ publish (confirmed) and consume (acked) of 300-byte messages: Herald vs RabbitMQ.Client 7, MassTransit 8";

    public async Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken)
    {
        var repeat = args.Repeat ?? (args.Quick ? 1 : 5);
        var count = args.Quick ? 2_000 : 20_000;
        var warmup = args.Quick ? 500 : 2_000;
        var broker = new Uri(Environment.GetEnvironmentVariable("HERALD_BENCH_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/");
        var runId = Guid.NewGuid().ToString("N")[..8];
        Console.WriteLine($"rabbitmq: {(args.Quick ? "quick" : "full")} run, {repeat} measured round(s) of {count:N0} messages, broker {broker.Host}:{broker.Port}");

        // Also deletes every queue the run declared, whichever contenders ran.
        await using var admin = new RawRabbitMqContender(broker);
        await admin.StartAsync(cancellationToken);
        var contenders = new List<IBrokerContender>();
        var declared = new List<string>();
        var publish = new List<MeasurementSeries>();
        WarmupReport warmed = default;
        var consume = new List<MeasurementSeries>();
        try
        {
            // The raw baselines publish on as many channels as Herald does by default, so publishing differs only by Herald.
            var channels = new RabbitMqTransportOptions().PublisherChannels;
            foreach (var create in new Func<IBrokerContender>[]
            {
                () => new HeraldRabbitMqContender(broker, ackEach: true),
                () => new RawRabbitMqContender(broker, channels),
                () => new MassTransitRabbitMqContender(broker),
                () => new HeraldRabbitMqContender(broker, ackEach: false),
                () => new RawRabbitMqContender(broker, channels, ackBatch: AckBatch),
                () => new RawRabbitMqContender(broker, channels, cloudEventHeaders: true),
            })
            {
                var contender = create();
                if (!args.Includes(contender.Name))
                {
                    continue;
                }

                contenders.Add(contender);
                Console.WriteLine($"  starting {contender.Name}");
                await contender.StartAsync(cancellationToken);
            }

            string QueueFor(IBrokerContender c, string round)
            {
                var slug = string.Concat(c.Name.ToLowerInvariant().Select(ch => char.IsAsciiLetterOrDigit(ch) ? ch : '-'));
                var queue = $"herald-bench-{runId}-{slug}-{round}";
                declared.Add(queue);
                declared.Add(queue + ".dead-letter");
                return queue;
            }

            warmed = await BrokerWorkload.WarmUpAsync(contenders, QueueFor, warmup, args.Quick, cancellationToken);

            var publishRuns = contenders.ToDictionary(c => c, _ => new List<Measurement>());
            var consumeRuns = contenders.ToDictionary(c => c, _ => new List<Measurement>());
            var stops = contenders.ToDictionary(c => c, _ => new List<TimeSpan>());
            for (var round = 1; round <= repeat; round++)
            {
                Console.Write($"    round {round}:");
                foreach (var c in contenders)
                {
                    var queue = QueueFor(c, round.ToString(CultureInfo.InvariantCulture));
                    var p = await Measurement.TakeAsync(count, () => c.PublishAsync(queue, count, BrokerWorkload.Outstanding, cancellationToken), Broker);
                    IAsyncDisposable? consumer = null;
                    var r = await Measurement.TakeAsync(count, async () => consumer = await c.ConsumeAsync(queue, count, cancellationToken), Broker);
                    var stopping = System.Diagnostics.Stopwatch.StartNew();
                    await consumer!.DisposeAsync();
                    stops[c].Add(stopping.Elapsed);
                    publishRuns[c].Add(p);
                    consumeRuns[c].Add(r);
                    Console.Write($" {c.Name} publish {p.MessagesPerSecond:N0}/s consume {r.MessagesPerSecond:N0}/s (stop {stops[c][^1].TotalMilliseconds:N0} ms);");
                }

                Console.WriteLine();
            }

            publish.AddRange(contenders.Select(c => new MeasurementSeries(c.Name, c.Setup, publishRuns[c])));
            consume.AddRange(contenders.Select(c => new MeasurementSeries(c.Name, c.Setup, consumeRuns[c])));
        }
        finally
        {
            foreach (var c in contenders)
            {
                try
                {
                    await c.DisposeAsync();
                }
                catch (Exception ex)
                {
                    Console.Error.WriteLine($"  stopping {c.Name} failed: {ex.Message}");
                }
            }

            try
            {
                await admin.DeleteAsync(declared, CancellationToken.None);
            }
            catch (Exception ex)
            {
                Console.Error.WriteLine($"  deleting the run's queues failed: {ex.Message}");
            }
        }

        var markdown = Render(args, repeat, count, warmed, publish, consume, contenders.Select(c => (c.Name, c.Setup)).ToList());
        ResultsFile.Publish(args, Name, markdown);
    }

    private static string Render(BenchmarkArgs args, int repeat, int count, WarmupReport warmed, List<MeasurementSeries> publish, List<MeasurementSeries> consume, List<(string Name, string Setup)> setups)
    {
        var text = ResultsFile.Open(args, "rabbitmq", "RabbitMQ publish and consume throughput", ("Broker", "RabbitMQ on 127.0.0.1 (same machine)"));
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Each contender: warm-up passes of publish + consume until the JIT settled (below), then {repeat} measured round(s) interleaving the contenders. A round publishes {count:N0} persistent {BrokerWorkload.MessageBytes}-byte messages to a fresh durable queue with {BrokerWorkload.Outstanding} sends outstanding (each completes on the publisher confirm), then consumes them all (prefetch {BrokerWorkload.Prefetch}; every handler deserializes the body to the message type; acks as each contender's name says). Publish is timed from the first send to the last confirm; consume from starting the consumer to the last ack (stopping the consumer afterwards is not timed).");
        text.AppendLine("\"CPU µs/msg\" is this process's CPU time ÷ messages; \"broker CPU µs/msg\" is the RabbitMQ server's (beam.smp) over the same phase. On 2 shared cores the sum is what bounds throughput, and it moves far less with other load than msg/s does.");
        text.AppendLine(warmed.Describe());
        text.AppendLine();
        var table = new MarkdownTable("Phase", "Contender", "Messages", "msg/s (median)", "range msg/s", "CPU µs/msg", "broker CPU µs/msg", "bytes/msg", "other CPU (max)");
        foreach (var (phase, series) in new[] { ("publish", publish), ("consume", consume) })
        {
            foreach (var s in series)
            {
                table.Add(phase, s.Contender, F(s.Messages), F(s.MessagesPerSecond), $"{F(s.MinMessagesPerSecond)}–{F(s.MaxMessagesPerSecond)}", s.CpuMicrosecondsPerMessage.ToString("0.0", CultureInfo.InvariantCulture), s.PeerCpuMicrosecondsPerMessage is { } b ? b.ToString("0.0", CultureInfo.InvariantCulture) : "–", F(s.BytesPerMessage), s.MaxForeignCpu is { } f ? f.ToString("P0", CultureInfo.InvariantCulture) : "–");
            }
        }

        text.Append(table);
        text.AppendLine();
        text.AppendLine("Headline ratios, like-for-like pairs only (msg/s of Herald ÷ msg/s of the other, median of the rounds; per round: the two contenders' runs of that round; CPU per message: lower is better for Herald):");
        text.AppendLine();
        var ratios = new MarkdownTable("Phase", "Both sides", "Herald", "÷ other", "msg/s ratio (median)", "per round", "CPU/msg ratio", "client+broker CPU/msg ratio");
        var targets = new List<string>();
        foreach (var comparison in Comparisons)
        {
            var series = comparison.Phase == "publish" ? publish : consume;
            var herald = series.FirstOrDefault(s => s.Contender == comparison.Herald);
            var other = series.FirstOrDefault(s => s.Contender == comparison.Other);
            if (herald is null || other is null)
            {
                continue;
            }

            var ratio = herald.MessagesPerSecond / other.MessagesPerSecond;
            var perRound = herald.Runs.Zip(other.Runs, (h, o) => h.MessagesPerSecond / o.MessagesPerSecond).ToList();
            ratios.Add(
                comparison.Phase,
                comparison.Conditions,
                comparison.Herald,
                comparison.Other,
                R(ratio),
                string.Join(" ", perRound.Select(x => R(x))),
                R(herald.CpuMicrosecondsPerMessage / other.CpuMicrosecondsPerMessage),
                R((herald.CpuMicrosecondsPerMessage + herald.PeerCpuMicrosecondsPerMessage) / (other.CpuMicrosecondsPerMessage + other.PeerCpuMicrosecondsPerMessage)));
            targets.Add(comparison.EveryRound
                ? $"- {comparison.Phase} ({comparison.Conditions}): ahead of {comparison.Other} in every round: {EveryRoundVerdict(perRound)}"
                : $"- {comparison.Phase} ({comparison.Conditions}): ≥ {comparison.Target:0.00}× {comparison.Other}, median of {perRound.Count} round(s): {Verdict(ratio, comparison.Target)}");
        }

        text.Append(ratios);
        text.AppendLine();
        text.AppendLine("Targets (issue 9):");
        text.AppendLine();
        foreach (var line in targets)
        {
            text.AppendLine(line);
        }

        if (repeat < 5)
        {
            text.AppendLine();
            text.AppendLine(CultureInfo.InvariantCulture, $"The targets are stated for the median of at least 5 rounds; this run has {repeat}.");
        }

        text.AppendLine();
        text.AppendLine("Setup:");
        text.AppendLine();
        foreach (var (name, setup) in setups)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"- **{name}**: {setup}");
        }

        return text.ToString();
    }

    private static string Verdict(double ratio, double target) => ratio >= target
        ? $"**met** ({R(ratio)})"
        : $"**missed** ({R(ratio)}, {ratio / target:P0} of the target)";

    private static string EveryRoundVerdict(List<double> perRound)
    {
        var ahead = perRound.Count(r => r > 1.0);
        return ahead == perRound.Count
            ? $"**met** ({perRound.Count} of {perRound.Count}, lowest {R(perRound.Min())})"
            : $"**missed** ({ahead} of {perRound.Count}, lowest {R(perRound.Min())})";
    }

    private static string R(double? value) => value is { } v ? v.ToString("0.00", CultureInfo.InvariantCulture) + "×" : "–";

    private static string F(double value) => value.ToString("N0", CultureInfo.InvariantCulture);

    /// <summary>A like-for-like pair: Herald's contender and another under the same conditions, and Herald's target against it.</summary>
    /// <param name="EveryRound">The target is being ahead in every round (else the median ratio reaching <paramref name="Target"/>).</param>
    private sealed record Comparison(string Phase, string Conditions, string Herald, string Other, double Target, bool EveryRound);
}
