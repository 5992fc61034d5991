using System.Globalization;
using System.Text;
using Herald.Benchmarks.Harness;
using Herald.Benchmarks.RabbitMq;

namespace Herald.Benchmarks.AmazonSqs;

/// <summary>
/// Amazon SQS publish and consume throughput (issue 13): Herald.AmazonSqs against the bare AWSSDK.SQS client, on the same
/// endpoint (the local emulator unless HERALD_BENCH_SQS names another) in one process. On the emulator, a single Node
/// process, the emulator bounds both sides: the ratios say how much Herald adds, not what SQS does.
/// </summary>
internal sealed class SqsBenchmark : IBenchmark
{
    private static readonly (string Phase, string Herald, string Other)[] Comparisons =
    [
        ("publish", HeraldSqsContender.ContenderName, RawSqsContender.OnePerCall),
        ("publish", HeraldSqsContender.ContenderName, RawSqsContender.Batched),
        ("publish", HeraldSqsContender.ContenderName, RawSqsContender.BatchedCloudEvents),
        ("consume", HeraldSqsContender.ContenderName, RawSqsContender.OnePerCall),
        ("consume", HeraldSqsContender.ContenderName, RawSqsContender.BatchedCloudEvents),
    ];

    private const double Target = 0.9;

    public string Name => "sqs";

    public string Description => "Amazon SQS send and receive+delete of 300-byte messages: Herald vs AWSSDK.SQS 4, on the local emulator";

    public async Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken)
    {
        var repeat = args.Repeat ?? (args.Quick ? 1 : 3);
        var count = args.Quick ? 500 : 3_000;
        var warmup = args.Quick ? 100 : 500;
        var prefix = $"herald-bench-{Guid.NewGuid():N}"[..21];
        Console.WriteLine($"sqs: {(args.Quick ? "quick" : "full")} run, {repeat} measured round(s) of {count:N0} messages, endpoint {SqsBench.ServiceUrl}");
        var contenders = new List<IBrokerContender>();
        var publish = new List<MeasurementSeries>();
        var consume = new List<MeasurementSeries>();
        try
        {
            foreach (var contender in new IBrokerContender[] { new HeraldSqsContender(), new RawSqsContender(batchSends: false), new RawSqsContender(batchSends: true), new RawSqsContender(batchSends: true, cloudEvents: true) })
            {
                if (args.Includes(contender.Name))
                {
                    contenders.Add(contender);
                    await contender.StartAsync(cancellationToken);
                }
            }

            string QueueFor(IBrokerContender c, string round) =>
                $"{prefix}-{string.Concat(c.Name.ToLowerInvariant().Where(char.IsAsciiLetterOrDigit))}-{round}";

            Console.WriteLine("  warm-up");
            foreach (var c in contenders)
            {
                var queue = QueueFor(c, "w");
                await c.PublishAsync(queue, warmup, BrokerWorkload.Outstanding, cancellationToken);
                await (await c.ConsumeAsync(queue, warmup, cancellationToken)).DisposeAsync();
            }

            var publishRuns = contenders.ToDictionary(c => c, _ => new List<Measurement>());
            var consumeRuns = contenders.ToDictionary(c => c, _ => new List<Measurement>());
            for (var round = 1; round <= repeat; round++)
            {
                Console.Write($"    round {round}:");
                foreach (var c in contenders)
                {
                    var queue = QueueFor(c, round.ToString(CultureInfo.InvariantCulture));
                    var p = await Measurement.TakeAsync(count, () => c.PublishAsync(queue, count, BrokerWorkload.Outstanding, cancellationToken), "node");
                    IAsyncDisposable? consumer = null;
                    var r = await Measurement.TakeAsync(count, async () => consumer = await c.ConsumeAsync(queue, count, cancellationToken), "node");
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
                await c.DisposeAsync();
            }

            await SqsBench.DeleteQueuesAsync(prefix);
        }

        var markdown = Render(args, repeat, count, publish, consume);
        Console.WriteLine();
        foreach (var (phase, herald, other) in Comparisons)
        {
            var series = phase == "publish" ? publish : consume;
            if (series.FirstOrDefault(s => s.Contender == herald) is { } h && series.FirstOrDefault(s => s.Contender == other) is { } o)
            {
                Console.WriteLine($"  {phase}: {herald} ÷ {other} = {h.MessagesPerSecond / o.MessagesPerSecond:0.00}×");
            }
        }

        ResultsFile.Publish(args, Name, markdown);
    }

    private static string Render(BenchmarkArgs args, int repeat, int count, List<MeasurementSeries> publish, List<MeasurementSeries> consume)
    {
        var text = new StringBuilder();
        text.AppendLine("# Amazon SQS publish and consume throughput");
        text.AppendLine();
        text.AppendLine(args.Heading("sqs"));
        text.AppendLine();
        var machine = new MarkdownTable("Machine", "");
        foreach (var (name, value) in MachineInfo.Describe())
        {
            machine.Add(name, value);
        }

        machine.Add("Endpoint", $"{SqsBench.ServiceUrl} (local-aws-sqs behind the project's shim unless HERALD_BENCH_SQS says otherwise)");
        text.Append(machine);
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Each contender: a warm-up, then {repeat} measured round(s). A round sends {count:N0} {BrokerWorkload.MessageBytes}-byte messages to a fresh queue with {BrokerWorkload.Outstanding} sends outstanding, then receives, deserializes and deletes them all. \"broker CPU\" is the emulator's (node) CPU time per message: the emulator bounds both sides.");
        text.AppendLine();
        var table = new MarkdownTable("Phase", "Contender", "msg/s (median)", "range msg/s", "CPU µs/msg", "broker CPU µs/msg");
        foreach (var (phase, series) in new[] { ("publish", publish), ("consume", consume) })
        {
            foreach (var s in series)
            {
                table.Add(phase, s.Contender, F(s.MessagesPerSecond), $"{F(s.MinMessagesPerSecond)}–{F(s.MaxMessagesPerSecond)}", s.CpuMicrosecondsPerMessage.ToString("0.0", CultureInfo.InvariantCulture), s.PeerCpuMicrosecondsPerMessage is { } b ? b.ToString("0.0", CultureInfo.InvariantCulture) : "–");
            }
        }

        text.Append(table);
        text.AppendLine();
        var ratios = new MarkdownTable("Phase", "Herald", "÷ other", "msg/s ratio (median)");
        foreach (var (phase, herald, other) in Comparisons)
        {
            var series = phase == "publish" ? publish : consume;
            if (series.FirstOrDefault(s => s.Contender == herald) is { } h && series.FirstOrDefault(s => s.Contender == other) is { } o)
            {
                ratios.Add(phase, herald, other, (h.MessagesPerSecond / o.MessagesPerSecond).ToString("0.00", CultureInfo.InvariantCulture) + "×");
            }
        }

        text.Append(ratios);
        text.AppendLine();
        foreach (var phase in new[] { "publish", "consume" })
        {
            var series = phase == "publish" ? publish : consume;
            if (series.FirstOrDefault(s => s.Contender == HeraldSqsContender.ContenderName) is { } h
                && series.FirstOrDefault(s => s.Contender == RawSqsContender.BatchedCloudEvents) is { } o)
            {
                var ratio = h.MessagesPerSecond / o.MessagesPerSecond;
                text.AppendLine(CultureInfo.InvariantCulture, $"- {phase}: ≥ {Target:0.00}× {RawSqsContender.BatchedCloudEvents} (like-for-like, issue 13): {ratio:0.00}×, {(ratio >= Target ? "**met**" : "**missed**")}");
            }
        }

        text.AppendLine();
        text.AppendLine("Setup:");
        text.AppendLine();
        foreach (var s in publish)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"- **{s.Contender}**: {s.Setup}");
        }

        return text.ToString();
    }

    private static string F(double value) => value.ToString("N0", CultureInfo.InvariantCulture);
}
