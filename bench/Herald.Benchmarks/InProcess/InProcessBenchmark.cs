using System.Diagnostics;
using System.Globalization;
using Herald.Benchmarks.Harness;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Benchmarks.InProcess;

/// <summary>
/// Publish-to-handler throughput and allocations inside one process: Herald's in-memory transport side by side with
/// MassTransit's in-memory transport, Wolverine's local queues and a bare Channel, in the same run.
/// </summary>
internal sealed class InProcessBenchmark : IBenchmark
{
    private const double TargetVsMassTransit = 3.0;
    private const double TargetVsWolverine = 1.0;
    private const double TargetBytesPerMessage = 1024;

    // A run during which other processes took more than this share of the machine is measured again (up to MaxAttempts).
    private const double DisturbedShare = 0.10;
    private const int MaxAttempts = 3;
    private static readonly TimeSpan QuietWait = TimeSpan.FromSeconds(15);

    // Waiting for quiet stops once the whole run has waited this long, so a busy machine cannot stretch a run for ever.
    private static readonly TimeSpan QuietBudget = TimeSpan.FromSeconds(60);

    private TimeSpan _waited;

    public string Name => "inprocess";

    public string Description => "in-process publish -> handler: Herald in-memory vs MassTransit in-memory, Wolverine local queue, Channel<T>";

    public async Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken)
    {
        var repeat = args.Repeat ?? (args.Quick ? 1 : 3);
        _waited = TimeSpan.Zero;
        int[] producerCounts = Environment.ProcessorCount > 1 ? [1, Environment.ProcessorCount] : [1];
        var plans = new (Func<IContender> Create, Counts Counts)[]
        {
            (() => new ChannelContender(), args.Quick ? new Counts(5_000, 50_000) : new Counts(200_000, 1_000_000)),
            (() => new HeraldContender(ServiceLifetime.Scoped), args.Quick ? new Counts(5_000, 20_000) : new Counts(100_000, 1_000_000)),
            (() => new HeraldContender(ServiceLifetime.Singleton), args.Quick ? new Counts(5_000, 20_000) : new Counts(100_000, 1_000_000)),
            (() => new WolverineContender(), args.Quick ? new Counts(5_000, 20_000) : new Counts(100_000, 1_000_000)),
            (() => new MassTransitContender(), args.Quick ? new Counts(500, 2_000) : new Counts(10_000, 100_000)),
        };

        Console.WriteLine($"inprocess: {(args.Quick ? "quick" : "full")} run, {repeat} measured round(s), producers {string.Join(" and ", producerCounts)}");
        var contenders = new List<(IContender Contender, Counts Counts)>();
        var warmups = new List<(int Producers, WarmupReport Report)>();
        var results = new List<Row>();
        try
        {
            foreach (var (create, counts) in plans)
            {
                var contender = create();
                if (!args.Includes(contender.Name))
                {
                    await contender.DisposeAsync().ConfigureAwait(false);
                    continue;
                }

                contenders.Add((contender, counts));
                Console.WriteLine($"  starting {contender.Name}");
                await contender.StartAsync(cancellationToken).ConfigureAwait(false);
            }

            foreach (var producers in producerCounts)
            {
                Console.WriteLine($"  {producers} producer(s): warm-up");
                var warmed = await JitWarmup.RunAsync(async _ =>
                {
                    foreach (var (contender, counts) in contenders)
                    {
                        await contender.RunAsync(counts.Warmup, producers, cancellationToken).ConfigureAwait(false);
                    }
                }, args.Quick).ConfigureAwait(false);
                warmups.Add((producers, warmed));
                Console.WriteLine($"    {warmed.Describe()}");

                // Rounds interleave the contenders, so a slow spell of the machine is spread over all of them.
                var runs = contenders.ToDictionary(c => c.Contender, _ => new List<Measurement>());
                for (var round = 1; round <= repeat; round++)
                {
                    Console.Write($"    round {round}:");
                    foreach (var (contender, counts) in contenders)
                    {
                        var measurement = await MeasureQuietlyAsync(contender, counts.Measured, producers, args.Quick ? 1 : MaxAttempts, cancellationToken).ConfigureAwait(false);
                        runs[contender].Add(measurement);
                        Console.Write($" {contender.Name} {measurement.MessagesPerSecond:N0}/s {measurement.CpuMicrosecondsPerMessage:0.00} CPU-µs{Disturbance(measurement)};");
                    }

                    Console.WriteLine();
                }

                results.AddRange(contenders.Select(c => new Row(new MeasurementSeries(c.Contender.Name, c.Contender.Setup, runs[c.Contender]), producers)));
            }
        }
        finally
        {
            foreach (var (contender, _) in contenders)
            {
                await contender.DisposeAsync().ConfigureAwait(false);
            }
        }

        var setups = contenders.Select(c => (c.Contender.Name, c.Contender.Setup)).ToList();
        var markdown = Render(args, repeat, results, warmups, setups);
        ResultsFile.Publish(args, Name, markdown);
    }

    private async Task<Measurement> MeasureQuietlyAsync(IContender contender, int messages, int producers, int attempts, CancellationToken cancellationToken)
    {
        Measurement? best = null;
        for (var attempt = 1; attempt <= attempts; attempt++)
        {
            if (attempt > 1)
            {
                if (_waited >= QuietBudget)
                {
                    break;
                }

                var waitStarted = Stopwatch.GetTimestamp();
                var quiet = await CpuSample.WaitForQuietAsync(DisturbedShare, QuietWait, cancellationToken).ConfigureAwait(false);
                _waited += Stopwatch.GetElapsedTime(waitStarted);
                if (!quiet)
                {
                    Console.Write(" [still busy]");
                }
            }

            var measurement = await Measurement.TakeAsync(messages, () => contender.RunAsync(messages, producers, cancellationToken)).ConfigureAwait(false);
            if (best is null || (measurement.ForeignCpu ?? 0) < (best.Value.ForeignCpu ?? 0))
            {
                best = measurement;
            }

            if ((measurement.ForeignCpu ?? 0) <= DisturbedShare)
            {
                break;
            }

            if (attempt < attempts && _waited < QuietBudget)
            {
                Console.Write($" [{contender.Name}: other processes used {measurement.ForeignCpu:P0} of the machine, measuring again]");
            }
        }

        return best!.Value;
    }

    private static string Disturbance(Measurement measurement) =>
        measurement.ForeignCpu > DisturbedShare ? $" (other processes {measurement.ForeignCpu:P0})" : "";

    private static string Render(BenchmarkArgs args, int repeat, List<Row> results, List<(int Producers, WarmupReport Report)> warmups, List<(string Name, string Setup)> setups)
    {
        var text = ResultsFile.Open(args, "inprocess", "In-process publish → handler throughput");
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Each contender: warm-up passes of every contender until the JIT settled (below), then {repeat} measured run(s) of N messages; the table shows the median msg/s (and the range over the runs) and the median bytes allocated per message.");
        text.AppendLine();
        foreach (var (producers, warmed) in warmups)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"- {producers} producer(s): {warmed.Describe()}");
        }

        text.AppendLine("A run is timed with a `Stopwatch` from the first publish until the handler has counted N messages; bytes are `GC.GetTotalAllocatedBytes(precise: true)` over the run (whole process, every thread) ÷ N.");
        text.AppendLine("\"CPU µs/msg\" is this process's CPU time (every thread, user and kernel) over the run ÷ N (median): the cost of a message, less sensitive to other load than msg/s.");
        text.AppendLine(CultureInfo.InvariantCulture, $"All hosts run in one process; the rounds interleave the contenders. \"Other CPU\" is the share of the machine that other processes used during a run (from /proc/stat); a run above {DisturbedShare:P0} is measured again once the machine is quiet (waiting up to {QuietWait.TotalSeconds:0} s, {QuietBudget.TotalSeconds:0} s in all), up to {MaxAttempts} attempts, and the quietest attempt is kept.");
        text.AppendLine();
        var table = new MarkdownTable("Contender", "Producers", "Messages", "msg/s (median)", "range msg/s", "bytes/msg", "CPU µs/msg", "other CPU (max)");
        foreach (var row in results)
        {
            var s = row.Series;
            table.Add(s.Contender, Format(row.Producers), Format(s.Messages), Format(s.MessagesPerSecond), $"{Format(s.MinMessagesPerSecond)}–{Format(s.MaxMessagesPerSecond)}", s.BytesPerMessage.ToString("N0", CultureInfo.InvariantCulture), s.CpuMicrosecondsPerMessage.ToString("0.00", CultureInfo.InvariantCulture), s.MaxForeignCpu is { } foreign ? foreign.ToString("P0", CultureInfo.InvariantCulture) : "–");
        }

        text.Append(table);
        text.AppendLine();
        if (results.Any(r => r.Series.MaxForeignCpu > DisturbedShare))
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"**Warning:** other processes took more than {DisturbedShare:P0} of the machine during some runs (last column) even after retries; msg/s of those rows is low and noisy, bytes/msg and CPU µs/msg much less so. Rerun on a quiet machine.");
            text.AppendLine();
        }

        var ratios = new MarkdownTable("Herald", "Producers", "throughput ×MassTransit", "throughput ×Wolverine", "bytes ÷MassTransit", "bytes ÷Wolverine", "CPU/msg ÷MassTransit", "CPU/msg ÷Wolverine");
        var targets = new List<string>();
        foreach (var herald in results.Where(r => r.Series.Contender.StartsWith("Herald", StringComparison.Ordinal)))
        {
            var massTransit = results.FirstOrDefault(r => r.Producers == herald.Producers && r.Series.Contender.StartsWith("MassTransit", StringComparison.Ordinal));
            var wolverine = results.FirstOrDefault(r => r.Producers == herald.Producers && r.Series.Contender.StartsWith("Wolverine", StringComparison.Ordinal));
            var h = herald.Series;
            ratios.Add(
                h.Contender,
                Format(herald.Producers),
                Ratio(h.MessagesPerSecond, massTransit?.Series.MessagesPerSecond),
                Ratio(h.MessagesPerSecond, wolverine?.Series.MessagesPerSecond),
                Ratio(h.BytesPerMessage, massTransit?.Series.BytesPerMessage),
                Ratio(h.BytesPerMessage, wolverine?.Series.BytesPerMessage),
                Ratio(h.CpuMicrosecondsPerMessage, massTransit?.Series.CpuMicrosecondsPerMessage),
                Ratio(h.CpuMicrosecondsPerMessage, wolverine?.Series.CpuMicrosecondsPerMessage));

            var checks = new List<string>();
            if (massTransit is not null)
            {
                checks.Add(Check($"≥ {TargetVsMassTransit:0}× MassTransit throughput", h.MessagesPerSecond >= TargetVsMassTransit * massTransit.Series.MessagesPerSecond));
            }

            if (wolverine is not null)
            {
                checks.Add(Check("≥ Wolverine throughput", h.MessagesPerSecond >= TargetVsWolverine * wolverine.Series.MessagesPerSecond));
            }

            checks.Add(Check($"< {TargetBytesPerMessage:0} bytes/msg", h.BytesPerMessage < TargetBytesPerMessage));
            targets.Add($"- {h.Contender}, {herald.Producers} producer(s): {string.Join("; ", checks)}");
        }

        if (targets.Count > 0)
        {
            text.AppendLine("Ratios (same producer count; throughput: higher is better for Herald; bytes and CPU per message: lower is better for Herald):");
            text.AppendLine();
            text.Append(ratios);
            text.AppendLine();
            text.AppendLine("Targets (issue 2): Herald at least 3× MassTransit's throughput, at least Wolverine's, under 1 KB allocated per message.");
            text.AppendLine();
            foreach (var line in targets)
            {
                text.AppendLine(line);
            }

            text.AppendLine();
        }

        text.AppendLine("Setup (every host: `Host.CreateApplicationBuilder` without defaults, console logging at Warning, library defaults unless stated):");
        text.AppendLine();
        foreach (var (name, setup) in setups)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"- **{name}**: {setup}");
        }

        text.AppendLine("- Every contender's message is a one-field record (`Ping(int Sequence)`) and its handler only counts; producers are tasks that each `await` their publishes in turn.");
        return text.ToString();
    }

    private static string Check(string what, bool met) => $"{what}: {(met ? "**met**" : "**missed**")}";

    private static string Ratio(double value, double? reference) =>
        reference is { } r && r > 0 ? (value / r).ToString("0.00", CultureInfo.InvariantCulture) + "×" : "–";

    private static string Format(double value) => value.ToString("N0", CultureInfo.InvariantCulture);

    private readonly record struct Counts(int Warmup, int Measured);

    private sealed record Row(MeasurementSeries Series, int Producers);
}
