using System.Globalization;
using System.Text;
using Herald.Benchmarks.Harness;
using Herald.Benchmarks.RabbitMq;

namespace Herald.Benchmarks.Nats;

/// <summary>
/// NATS JetStream publish (each awaiting its publish ack) and consume (explicit ack, prefetch 100, 4 workers decoding
/// the body) throughput (issue 13): Herald.Nats against the bare NATS.Net 3 JetStream client, on the same server in one
/// process, with like-for-like acks: a publish completes on the stream's ack on both sides, and both consumers ack every
/// message on its own without double ack.
/// </summary>
internal sealed class NatsBenchmark : IBenchmark
{
    private const double TargetVsRaw = 0.9;
    private const string Server = "nats-server";

    public string Name => "nats";

    public string Description => "NATS JetStream publish (acked) and consume (acked) of 300-byte messages: Herald vs NATS.Net 3";

    public async Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken)
    {
        var repeat = args.Repeat ?? (args.Quick ? 1 : 5);
        var count = args.Quick ? 2_000 : 20_000;
        var warmup = args.Quick ? 500 : 2_000;
        var url = Environment.GetEnvironmentVariable("HERALD_BENCH_NATS") is { Length: > 0 } u ? u : "nats://127.0.0.1:4222";
        var runId = Guid.NewGuid().ToString("N")[..8];
        var (streams, subjects) = ("HB" + runId.ToUpperInvariant(), "hb" + runId);
        Console.WriteLine($"nats: {(args.Quick ? "quick" : "full")} run, {repeat} measured round(s) of {count:N0} messages, server {url}");

        // Also deletes every stream the run made, whichever contenders ran.
        await using var raw = new RawNatsContender(url, streams, subjects);
        await raw.StartAsync(cancellationToken);
        var contenders = new List<IBrokerContender>();
        var publish = new List<MeasurementSeries>();
        WarmupReport warmed = default;
        var consume = new List<MeasurementSeries>();
        try
        {
            foreach (var contender in new IBrokerContender[] { new HeraldNatsContender(url, streams, subjects), new RawNatsContender(url, streams, subjects), new RawNatsContender(url, streams, subjects, cloudEventHeaders: true) })
            {
                if (!args.Includes(contender.Name))
                {
                    await contender.DisposeAsync();
                    continue;
                }

                contenders.Add(contender);
                Console.WriteLine($"  starting {contender.Name}");
                await contender.StartAsync(cancellationToken);
            }

            static string QueueFor(IBrokerContender c, string round) =>
                string.Concat(c.Name.ToLowerInvariant().Select(ch => char.IsAsciiLetterOrDigit(ch) ? ch : '-')).Trim('-') + "-" + round;

            warmed = await BrokerWorkload.WarmUpAsync(contenders, QueueFor, warmup, args.Quick, cancellationToken);

            var publishRuns = contenders.ToDictionary(c => c, _ => new List<Measurement>());
            var consumeRuns = contenders.ToDictionary(c => c, _ => new List<Measurement>());
            for (var round = 1; round <= repeat; round++)
            {
                Console.Write($"    round {round}:");
                foreach (var c in contenders)
                {
                    var queue = QueueFor(c, round.ToString(CultureInfo.InvariantCulture));
                    var p = await Measurement.TakeAsync(count, () => c.PublishAsync(queue, count, BrokerWorkload.Outstanding, cancellationToken), Server);
                    IAsyncDisposable? consumer = null;
                    var r = await Measurement.TakeAsync(count, async () => consumer = await c.ConsumeAsync(queue, count, cancellationToken), Server);
                    await consumer!.DisposeAsync();
                    publishRuns[c].Add(p);
                    consumeRuns[c].Add(r);
                    Console.Write($" {c.Name} publish {p.MessagesPerSecond:N0}/s consume {r.MessagesPerSecond:N0}/s;");
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
                await raw.DeleteStreamsAsync(CancellationToken.None);
            }
            catch (Exception ex)
            {
                Console.Error.WriteLine($"  deleting the run's streams failed: {ex.Message}");
            }
        }

        var markdown = Render(args, repeat, count, warmed, publish, consume, contenders.Select(c => (c.Name, c.Setup)).ToList());
        foreach (var line in markdown.Split('\n').Where(l => l.StartsWith("- publish", StringComparison.Ordinal) || l.StartsWith("- consume", StringComparison.Ordinal)))
        {
            Console.WriteLine("  " + line);
        }

        ResultsFile.Publish(args, Name, markdown);
    }

    private static string Render(BenchmarkArgs args, int repeat, int count, WarmupReport warmed, List<MeasurementSeries> publish, List<MeasurementSeries> consume, List<(string Name, string Setup)> setups)
    {
        var text = new StringBuilder();
        text.AppendLine("# NATS JetStream publish and consume throughput");
        text.AppendLine();
        text.AppendLine(args.Heading("nats"));
        text.AppendLine();
        var machine = new MarkdownTable("Machine", "");
        foreach (var (name, value) in MachineInfo.Describe())
        {
            machine.Add(name, value);
        }

        machine.Add("Server", "nats-server with JetStream (file storage) on 127.0.0.1 (same machine)");
        text.Append(machine);
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Each contender: warm-up passes of publish + consume until the JIT settled (below), then {repeat} measured round(s) interleaving the contenders. A round publishes {count:N0} {BrokerWorkload.MessageBytes}-byte messages to a fresh work-queue stream with {BrokerWorkload.Outstanding} publishes outstanding (each completes on the stream's publish ack), then consumes them all (prefetch {BrokerWorkload.Prefetch}, {BrokerWorkload.ConsumerConcurrency} workers; every handler deserializes the body and acks it on its own). Publish is timed from the first send to the last publish ack; consume from starting the consumer to the last ack (stopping it is not timed).");
        text.AppendLine("\"CPU µs/msg\" is this process's CPU time ÷ messages; \"server CPU µs/msg\" is nats-server's over the same phase.");
        text.AppendLine(warmed.Describe());
        text.AppendLine();
        var table = new MarkdownTable("Phase", "Contender", "Messages", "msg/s (median)", "range msg/s", "CPU µs/msg", "server CPU µs/msg", "bytes/msg");
        foreach (var (phase, series) in new[] { ("publish", publish), ("consume", consume) })
        {
            foreach (var s in series)
            {
                table.Add(phase, s.Contender, F(s.Messages), F(s.MessagesPerSecond), $"{F(s.MinMessagesPerSecond)}–{F(s.MaxMessagesPerSecond)}", s.CpuMicrosecondsPerMessage.ToString("0.0", CultureInfo.InvariantCulture), s.PeerCpuMicrosecondsPerMessage is { } b ? b.ToString("0.0", CultureInfo.InvariantCulture) : "–", F(s.BytesPerMessage));
            }
        }

        text.Append(table);
        text.AppendLine();
        text.AppendLine("Targets (issue 13), msg/s of Herald ÷ msg/s of the raw client, median of the rounds (per round in brackets); the raw client with Herald's CloudEvents headers is the like-for-like pair for the wire work:");
        text.AppendLine();
        foreach (var (phase, series) in new[] { ("publish", publish), ("consume", consume) })
        {
            var herald = series.FirstOrDefault(s => s.Contender == HeraldNatsContender.ContenderName);
            foreach (var other in series.Where(s => s.Contender != HeraldNatsContender.ContenderName))
            {
                if (herald is null)
                {
                    continue;
                }

                var ratio = herald.MessagesPerSecond / other.MessagesPerSecond;
                var perRound = herald.Runs.Zip(other.Runs, (h, o) => h.MessagesPerSecond / o.MessagesPerSecond);
                var cpu = herald.CpuMicrosecondsPerMessage / other.CpuMicrosecondsPerMessage;
                var verdict = ratio >= TargetVsRaw ? "**met**" : $"**missed** ({ratio / TargetVsRaw:P0} of the target)";
                text.AppendLine(CultureInfo.InvariantCulture, $"- {phase}: ≥ {TargetVsRaw:0.00}× {other.Contender}: {R(ratio)} [{string.Join(" ", perRound.Select(R))}], {verdict}; client CPU/msg {R(cpu)}");
            }
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

    private static string R(double value) => value.ToString("0.00", CultureInfo.InvariantCulture) + "×";

    private static string F(double value) => value.ToString("N0", CultureInfo.InvariantCulture);
}
