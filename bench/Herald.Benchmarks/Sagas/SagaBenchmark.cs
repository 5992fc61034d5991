using System.Diagnostics;
using System.Globalization;
using Herald.Benchmarks.EventStore;
using Herald.Benchmarks.Harness;

namespace Herald.Benchmarks.Sagas;

/// <summary>
/// State-machine saga throughput (issue 11): messages/s through Herald's <c>SagaStateMachine</c> against a MassTransit
/// state machine saga doing the same transitions, both on an in-memory transport and an in-memory saga repository (the
/// headline, like for like), with Herald on SQLite and on PostgreSQL measured in the same run and reported beside it.
/// </summary>
internal sealed class SagaBenchmark : IBenchmark
{
    private const string HeraldInMemory = "Herald (in-memory)";
    private const string MassTransitInMemory = "MassTransit (in-memory)";

    // Warm-up: at least MinWarmupRuns runs, more until WarmupTime has passed (full runs), at most MaxWarmupRuns.
    private const int MinWarmupRuns = 2;
    private const int MaxWarmupRuns = 10;
    private static readonly TimeSpan WarmupTime = TimeSpan.FromSeconds(4);

    // A run during which other processes took more than this share of the machine is flagged in the results file.
    private const double DisturbedShare = 0.10;

    public string Name => "sagas";

    public string Description => "state-machine saga msg/s (3 transitions per order): Herald vs MassTransit in memory; Herald SQLite/PostgreSQL beside";

    public async Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken)
    {
        var repeat = args.Repeat ?? (args.Quick ? 1 : 5);
        var producers = Environment.ProcessorCount;
        var postgres = Environment.GetEnvironmentVariable("HERALD_BENCH_POSTGRES") is { Length: > 0 } cs
            ? cs
            : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";

        // Orders per run: the in-memory pair gets the same count; a database commits every message, so gets fewer.
        var inMemory = args.Quick ? new Counts(200, 500) : new Counts(2_000, 10_000);
        var durable = args.Quick ? new Counts(50, 100) : new Counts(150, 700);
        var plans = new (Func<ISagaContender> Create, Counts Counts)[]
        {
            (() => new MassTransitSagaContender(), inMemory),
            (HeraldSagaContender.InMemory, inMemory),
            (HeraldSagaContender.Sqlite, durable),
            (() => HeraldSagaContender.Postgres(postgres), durable),
        };

        Console.WriteLine($"sagas: {(args.Quick ? "quick" : "full")} run, {repeat} measured round(s), {producers} producers, PostgreSQL {EventStoreBenchmark.Redact(postgres)}");
        var contenders = new List<(ISagaContender Contender, Counts Counts)>();
        var results = new List<MeasurementSeries>();
        try
        {
            foreach (var (create, counts) in plans)
            {
                var contender = create();
                if (!args.Includes(contender.Name))
                {
                    await contender.DisposeAsync();
                    continue;
                }

                contenders.Add((contender, counts));
                Console.WriteLine($"  starting {contender.Name}");
                await contender.StartAsync(cancellationToken);
            }

            Console.WriteLine("  warm-up");
            foreach (var (contender, counts) in contenders)
            {
                // Runs with a pause between them until tiered compilation has had time to install optimized code (a
                // busy machine starves the compiler's thread); every run checks that the orders went through every transition.
                var started = Stopwatch.GetTimestamp();
                for (var pass = 1; pass <= MaxWarmupRuns && (pass <= MinWarmupRuns || (!args.Quick && Stopwatch.GetElapsedTime(started) < WarmupTime)); pass++)
                {
                    await SagaWorkload.CheckFinishedAsync(contender, await SagaWorkload.RunAsync(contender, counts.Warmup, producers, cancellationToken), cancellationToken);
                    await Task.Delay(200, cancellationToken);
                }
            }

            // Rounds interleave the contenders, so a slow spell of the machine is spread over all of them.
            var runs = contenders.ToDictionary(c => c.Contender, _ => new List<Measurement>());
            for (var round = 1; round <= repeat; round++)
            {
                Console.Write($"    round {round}:");
                foreach (var (contender, counts) in contenders)
                {
                    Guid[] ids = [];
                    var m = await Measurement.TakeAsync(
                        counts.Measured * SagaWorkload.EventsPerOrder,
                        async () => ids = await SagaWorkload.RunAsync(contender, counts.Measured, producers, cancellationToken),
                        peer: "postgres");
                    await SagaWorkload.CheckFinishedAsync(contender, ids, cancellationToken);
                    runs[contender].Add(m);
                    Console.Write($" {contender.Name} {m.MessagesPerSecond:N0} msg/s {m.CpuMicrosecondsPerMessage:0.0} CPU-µs;");
                }

                Console.WriteLine();
            }

            results.AddRange(contenders.Select(c => new MeasurementSeries(c.Contender.Name, c.Contender.Setup, runs[c.Contender])));
        }
        finally
        {
            foreach (var (contender, _) in contenders)
            {
                try
                {
                    await contender.DisposeAsync();
                }
                catch (Exception ex)
                {
                    Console.Error.WriteLine($"  stopping {contender.Name} failed: {ex.Message}");
                }
            }
        }

        var server = await EventStoreBenchmark.DescribeServerAsync(postgres, cancellationToken);
        var markdown = Render(args, repeat, producers, server, results);
        ResultsFile.Publish(args, Name, markdown);
    }

    private static string Render(BenchmarkArgs args, int repeat, int producers, string server, List<MeasurementSeries> results)
    {
        var text = ResultsFile.Open(args, "sagas", "State-machine saga throughput", ("Servers", $"{server}; SQLite file in the temp directory"));
        text.AppendLine();
        text.AppendLine("The work, the same for every contender: N new orders, each taken through three transitions of a state machine saga, one event each: `OrderSubmitted` creates the instance (state AwaitingPayment), `PaymentAccepted` moves it to AwaitingShipment, `OrderShipped` to Shipped, where it ends and stays stored. Every event is correlated to its instance by the order id and its transition copies the event's fields into the instance's data.");
        text.AppendLine(CultureInfo.InvariantCulture, $"A run has three phases, one per event: {producers} producer tasks publish the phase's N events (each awaiting its publish before the next), and the phase ends when all N are finished (the instance saved and the delivery settled), so no event can reach its instance before the state that expects it. A run is timed from the first publish to the last finished event; msg/s is 3N ÷ that time. Both sides serialize every event to JSON on publish and deserialize the body into the same record on receive.");
        text.AppendLine(CultureInfo.InvariantCulture, $"Each contender: warm-up runs (at least {MinWarmupRuns}, in a full run more until {WarmupTime.TotalSeconds:0} s have passed, at most {MaxWarmupRuns}), then {repeat} measured round(s) interleaving the contenders; the table shows the median msg/s and the range. After every run each order is checked to be in state Shipped (not timed), so a lost, ignored or out-of-turn event fails the run.");
        text.AppendLine("\"CPU µs/msg\" is this process's CPU time (every thread) over the run ÷ messages (a database server's CPU is not included); bytes are `GC.GetTotalAllocatedBytes(precise: true)` over the run ÷ messages. \"Other CPU\" is the share of the machine that other processes used during a run, the PostgreSQL server's processes excepted (their CPU is the work the PostgreSQL row asks of its server).");
        text.AppendLine();
        var table = new MarkdownTable("Contender", "Orders", "Messages", "msg/s (median)", "range msg/s", "CPU µs/msg", "bytes/msg", "other CPU (max)");
        foreach (var s in results)
        {
            table.Add(s.Contender, F(s.Messages / SagaWorkload.EventsPerOrder), F(s.Messages), F(s.MessagesPerSecond), $"{F(s.MinMessagesPerSecond)}–{F(s.MaxMessagesPerSecond)}", s.CpuMicrosecondsPerMessage.ToString("0.0", CultureInfo.InvariantCulture), F(s.BytesPerMessage), s.MaxUnrelatedCpu is { } f ? f.ToString("P0", CultureInfo.InvariantCulture) : "–");
        }

        text.Append(table);
        text.AppendLine();
        if (results.Any(r => r.MaxUnrelatedCpu > DisturbedShare))
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"**Warning:** other processes took more than {DisturbedShare:P0} of the machine during some runs (last column); msg/s of those rows is low and noisy, CPU and bytes per message much less so. Rerun on a quiet machine.");
            text.AppendLine();
        }

        var herald = results.FirstOrDefault(s => s.Contender == HeraldInMemory);
        var massTransit = results.FirstOrDefault(s => s.Contender == MassTransitInMemory);
        if (herald is not null && massTransit is not null)
        {
            text.AppendLine("Headline, like for like (in-memory transport and in-memory saga repository on both sides): msg/s of Herald ÷ msg/s of MassTransit, median of the rounds and per round (the two contenders' runs of that round); CPU and bytes per message: lower is better for Herald.");
            text.AppendLine();
            var ratios = new MarkdownTable("Herald", "÷ other", "msg/s ratio (median)", "per round", "CPU/msg ratio", "bytes/msg ratio");
            ratios.Add(
                herald.Contender,
                massTransit.Contender,
                R(herald.MessagesPerSecond / massTransit.MessagesPerSecond),
                PerRound(herald, massTransit),
                R(herald.CpuMicrosecondsPerMessage / massTransit.CpuMicrosecondsPerMessage),
                R(herald.BytesPerMessage / massTransit.BytesPerMessage));
            text.Append(ratios);
            text.AppendLine();
        }

        var durable = results.Where(s => s.Contender.StartsWith("Herald", StringComparison.Ordinal) && s.Contender != HeraldInMemory).ToList();
        if (durable.Count > 0)
        {
            text.AppendLine("Beside it, not like for like: Herald with its saga store in a database commits every transition (the saga row in the message's unit of work) before the event counts as finished; msg/s of each ÷ msg/s of the in-memory contenders, median of the rounds (per round against MassTransit).");
            text.AppendLine();
            var beside = new MarkdownTable("Herald", "msg/s (median)", "÷ Herald (in-memory)", "÷ MassTransit (in-memory)", "per round ÷ MassTransit");
            foreach (var s in durable)
            {
                beside.Add(
                    s.Contender,
                    F(s.MessagesPerSecond),
                    herald is null ? "–" : R(s.MessagesPerSecond / herald.MessagesPerSecond),
                    massTransit is null ? "–" : R(s.MessagesPerSecond / massTransit.MessagesPerSecond),
                    massTransit is null ? "–" : PerRound(s, massTransit));
            }

            text.Append(beside);
            text.AppendLine();
        }

        text.AppendLine("Issue 11 asks for this comparison in the same run and sets no target for it.");
        text.AppendLine();
        text.AppendLine("Setup (every host: `Host.CreateApplicationBuilder` without defaults, console logging at Warning, library defaults unless stated):");
        text.AppendLine();
        foreach (var s in results)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"- **{s.Contender}**: {s.Setup}");
        }

        return text.ToString();
    }

    private static string PerRound(MeasurementSeries herald, MeasurementSeries other) =>
        string.Join(" ", herald.Runs.Zip(other.Runs, (h, o) => R(h.MessagesPerSecond / o.MessagesPerSecond)));

    // Ratios far below 1 (a database against memory) keep a third digit, so they do not read as 0.00×.
    private static string R(double value) => value.ToString(value < 0.1 ? "0.000" : "0.00", CultureInfo.InvariantCulture) + "×";

    private static string F(double value) => value.ToString("N0", CultureInfo.InvariantCulture);

    private readonly record struct Counts(int Warmup, int Measured);
}
