using System.Globalization;
using Herald.Benchmarks.EventStore;
using Herald.Benchmarks.Harness;

namespace Herald.Benchmarks.Projections;

/// <summary>
/// Projection rebuild (issue 11): events/s of Herald's blue/green rebuild of an async projection on PostgreSQL against
/// Marten's async-daemon rebuild of the same events into the same read model, on the same server, in one run.
/// </summary>
internal sealed class ProjectionRebuildBenchmark : IBenchmark
{
    // Issue 11's target for the headline ratio.
    private const double Target = 2.0;

    public string Name => "projections";

    public string Description => "projection rebuild events/s on PostgreSQL: Herald (blue/green) vs Marten (async daemon), same events, same read model";

    public async Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken)
    {
        var repeat = args.Repeat ?? (args.Quick ? 1 : 5);
        var orderCount = args.Quick ? 500 : 10_000;
        var postgres = Environment.GetEnvironmentVariable("HERALD_BENCH_POSTGRES") is { Length: > 0 } cs
            ? cs
            : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";
        var orders = Enumerable.Range(0, orderCount).Select(_ => Guid.CreateVersion7()).ToArray();
        var events = orderCount * RebuildWorkload.EventsPerOrder;

        Console.WriteLine($"projections: {(args.Quick ? "quick" : "full")} run, {repeat} measured round(s), {orderCount:N0} orders ({events:N0} events), PostgreSQL {EventStoreBenchmark.Redact(postgres)}");
        var contenders = new List<IRebuildContender>();
        var runs = new Dictionary<IRebuildContender, List<Measurement>>();
        try
        {
            foreach (var contender in new IRebuildContender[] { new MartenRebuildContender(postgres), new HeraldRebuildContender(postgres) })
            {
                if (!args.Includes(contender.Name))
                {
                    await contender.DisposeAsync();
                    continue;
                }

                contenders.Add(contender);
                runs[contender] = [];
                Console.WriteLine($"  starting {contender.Name}: storing {events:N0} events");
                await contender.StartAsync(orders, cancellationToken);
            }

            Console.WriteLine("  warm-up: one rebuild each");
            foreach (var contender in contenders)
            {
                await RebuildCheckedAsync(contender, orderCount, cancellationToken);
            }

            // Rounds interleave the contenders, so a slow spell of the machine is spread over both.
            for (var round = 1; round <= repeat; round++)
            {
                Console.Write($"    round {round}:");
                foreach (var contender in contenders)
                {
                    var m = await Measurement.TakeAsync(events, () => contender.RebuildAsync(cancellationToken), peer: "postgres");
                    await CheckAsync(contender, orderCount, cancellationToken);
                    runs[contender].Add(m);
                    Console.Write($" {contender.Name} {m.MessagesPerSecond:N0} ev/s {m.CpuMicrosecondsPerMessage:0.0} CPU-µs;");
                }

                Console.WriteLine();
            }
        }
        finally
        {
            foreach (var contender in contenders)
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

        var results = contenders.Select(c => new MeasurementSeries(c.Name, c.Setup, runs[c])).ToList();
        var server = await EventStoreBenchmark.DescribeServerAsync(postgres, cancellationToken);
        ResultsFile.Publish(args, Name, Render(args, repeat, orderCount, server, results));
    }

    private static async Task RebuildCheckedAsync(IRebuildContender contender, int orders, CancellationToken cancellationToken)
    {
        await contender.RebuildAsync(cancellationToken);
        await CheckAsync(contender, orders, cancellationToken);
    }

    // Not timed: a rebuild that lost or skipped an event leaves an order short of a field or a state, and fails the run.
    private static async Task CheckAsync(IRebuildContender contender, int orders, CancellationToken cancellationToken)
    {
        var complete = await contender.CountCompleteAsync(cancellationToken);
        if (complete != orders)
        {
            throw new InvalidOperationException($"{contender.Name}: after the rebuild {complete:N0} of {orders:N0} orders are shipped with every field set.");
        }
    }

    private static string Render(BenchmarkArgs args, int repeat, int orders, string server, List<MeasurementSeries> results)
    {
        var text = ResultsFile.Open(args, "projections", "Projection rebuild", ("Servers", server));
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"The work, the same for both: {orders:N0} orders stored as one stream each of three events (placed, paid, shipped; {orders * RebuildWorkload.EventsPerOrder:N0} events), appended before timing. A rebuild replays every event into a read model of one JSON document per order (customer, total, lines, status, payment reference, tracking number): the placed event creates it, the other two change it. Both sides deserialize every event into the same records and store the documents in PostgreSQL tables of their own schema on the same server.");
        text.AppendLine(CultureInfo.InvariantCulture, $"Each contender: one warm-up rebuild, then {repeat} measured round(s) interleaving the contenders; each rebuild is timed from the call to its return, and events/s is the events replayed ÷ that time. After every rebuild (not timed) every order must be in the read model, shipped, with every field set, or the run fails.");
        text.AppendLine("\"CPU µs/ev\" is this process's CPU time (every thread) over the rebuild ÷ events; \"server CPU µs/ev\" the same for every `postgres` process; bytes are `GC.GetTotalAllocatedBytes(precise: true)` over the rebuild ÷ events. \"Other CPU\" is the share of the machine that processes other than this one (the database server among them) used during a rebuild.");
        text.AppendLine();
        var table = new MarkdownTable("Contender", "Events", "ev/s (median)", "range ev/s", "CPU µs/ev", "server CPU µs/ev", "bytes/ev", "other CPU (max)");
        foreach (var s in results)
        {
            table.Add(
                s.Contender,
                F(s.Messages),
                F(s.MessagesPerSecond),
                $"{F(s.MinMessagesPerSecond)}–{F(s.MaxMessagesPerSecond)}",
                s.CpuMicrosecondsPerMessage.ToString("0.0", CultureInfo.InvariantCulture),
                s.PeerCpuMicrosecondsPerMessage is { } peer ? peer.ToString("0.0", CultureInfo.InvariantCulture) : "–",
                F(s.BytesPerMessage),
                s.MaxForeignCpu is { } f ? f.ToString("P0", CultureInfo.InvariantCulture) : "–");
        }

        text.Append(table);
        text.AppendLine();
        var herald = results.FirstOrDefault(s => s.Contender == "Herald");
        var marten = results.FirstOrDefault(s => s.Contender == "Marten");
        if (herald is not null && marten is not null)
        {
            var ratio = herald.MessagesPerSecond / marten.MessagesPerSecond;
            text.AppendLine(CultureInfo.InvariantCulture, $"Headline, like for like (same events, same read model, same server, defaults on both sides): rebuild events/s of Herald ÷ Marten, median of the rounds and per round. Issue 11's target is at least {Target:0.0}×: {(ratio >= Target ? "met" : "**not met**")}.");
            text.AppendLine();
            var ratios = new MarkdownTable("Herald ÷ Marten", "ev/s ratio (median)", "per round", "CPU/ev ratio", "server CPU/ev ratio", "bytes/ev ratio");
            ratios.Add(
                "rebuild",
                R(ratio),
                string.Join(" ", herald.Runs.Zip(marten.Runs, (h, m) => R(h.MessagesPerSecond / m.MessagesPerSecond))),
                R(herald.CpuMicrosecondsPerMessage / marten.CpuMicrosecondsPerMessage),
                herald.PeerCpuMicrosecondsPerMessage is { } hp && marten.PeerCpuMicrosecondsPerMessage is { } mp ? R(hp / mp) : "–",
                R(herald.BytesPerMessage / marten.BytesPerMessage));
            text.Append(ratios);
            text.AppendLine();
        }

        text.AppendLine("Setup (the host: `Host.CreateApplicationBuilder` without defaults, console logging at Warning):");
        text.AppendLine();
        foreach (var s in results)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"- **{s.Contender}**: {s.Setup}");
        }

        return text.ToString();
    }

    private static string R(double value) => value.ToString(value < 0.1 ? "0.000" : "0.00", CultureInfo.InvariantCulture) + "×";

    private static string F(double value) => value.ToString("N0", CultureInfo.InvariantCulture);
}
