using System.Diagnostics;
using System.Globalization;
using System.Threading.Channels;
using Herald.Benchmarks.EventStore;
using Herald.Benchmarks.Harness;
using Herald.EventSourcing;
using Herald.Kafka.Tests;
using Herald.Messages;
using Herald.Streams;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Benchmarks.Streams;

/// <summary>
/// Stream processing (issue 15): a windowed aggregation (revenue per product in 1-minute tumbling windows, emitted when
/// each window closes) over <c>$all</c> on SQLite and PostgreSQL, with the cost of the state checkpoint per event; the
/// same aggregation by Herald's engine and by a hand-written loop over a <see cref="Channel{T}"/> (the limit); and over a
/// Kafka topic on librdkafka's mock cluster, by Streamiz.Kafka.Net and by Herald's transport-source stream.
/// </summary>
internal sealed partial class StreamsBenchmark : IBenchmark
{
    private const int Products = 50;
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public string Name => "streams";

    public string Description => "windowed aggregation events/s over $all on SQLite/PostgreSQL (+ checkpoint cost), Herald engine vs a Channel<T> loop, Herald vs Streamiz over Kafka (mock cluster)";

    public async Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken)
    {
        var postgres = Environment.GetEnvironmentVariable("HERALD_BENCH_POSTGRES") is { Length: > 0 } cs
            ? cs
            : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";
        var durableEvents = args.Quick ? 5_000 : 50_000;
        var memoryEvents = args.Quick ? 200_000 : 2_000_000;

        // librdkafka's mock keeps about 5 MB per partition (older records are deleted): 15,000 of these records fit.
        var kafkaEvents = Math.Min(durableEvents, MockCluster.IsMock ? 15_000 : durableEvents);
        var rounds = args.Repeat ?? (args.Quick ? 1 : 3);
        Console.WriteLine($"streams: {(args.Quick ? "quick" : "full")} run, {rounds} round(s), {durableEvents} events over $all and over Kafka, {memoryEvents} in memory");

        var rows = new List<Row>();
        var failures = new List<string>();
        var kafka = KafkaContenders.Where(c => args.Includes(c.Name)).ToList();
        if (kafka.Count > 0)
        {
            // Warm-up, not recorded: each Kafka client's first start in the process pays for JIT and native loading.
            var warmUp = await FillTopicAsync(600, cancellationToken);
            foreach (var (_, run) in kafka)
            {
                await run(warmUp, 600, cancellationToken);
            }
        }

        for (var round = 0; round < rounds; round++)
        {
            if (args.Includes("Channel<T> loop"))
            {
                rows.Add(await ChannelBaselineAsync(memoryEvents));
            }

            if (args.Includes("Herald engine"))
            {
                rows.Add(await EngineAsync(memoryEvents));
            }

            if (args.Includes("Herald SQLite"))
            {
                var file = Path.Combine(Path.GetTempPath(), $"herald-bench-streams-{Guid.NewGuid():N}.db");
                try
                {
                    rows.Add(await OverAllAsync("Herald SQLite", durableEvents, h => h.UseSqlite(file).UseSqliteStreamState(), cancellationToken));
                }
                finally
                {
                    foreach (var f in new[] { file, file + "-wal", file + "-shm" })
                    {
                        File.Delete(f);
                    }
                }
            }

            if (args.Includes("Herald PostgreSQL"))
            {
                var schema = "herald_bench_streams_" + Guid.NewGuid().ToString("N")[..8];
                try
                {
                    rows.Add(await OverAllAsync("Herald PostgreSQL", durableEvents, h => h.UsePostgres(postgres, o => o.Schema = schema).UsePostgresStreamState(), cancellationToken));
                }
                finally
                {
                    await using var connection = new NpgsqlConnection(postgres);
                    await connection.OpenAsync(cancellationToken);
                    await using var drop = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", connection);
                    await drop.ExecuteNonQueryAsync(cancellationToken);
                }
            }

            if (kafka.Count > 0)
            {
                // One topic per round, read by every Kafka contender (each its own group or application id).
                var fill = Stopwatch.StartNew();
                var topic = await FillTopicAsync(kafkaEvents, cancellationToken);
                Console.WriteLine($"  round {round + 1}: {kafkaEvents} events sent to {topic} in {fill.Elapsed.TotalSeconds:0.0} s");
                foreach (var (name, run) in round % 2 == 0 ? kafka : Enumerable.Reverse(kafka))
                {
                    try
                    {
                        var row = await run(topic, kafkaEvents, cancellationToken);
                        Console.WriteLine($"  round {round + 1}: {name} {row.Events / row.Elapsed.TotalSeconds:N0} events/s");
                        rows.Add(row);
                    }
                    catch (Exception e) when (e is TimeoutException or InvalidOperationException)
                    {
                        // A contender that stalls or miscounts is reported as such, and the others still run.
                        Console.WriteLine($"  round {round + 1}: {name} failed: {e.Message}");
                        failures.Add($"{name}, round {round + 1}: {e.GetType().Name}: {e.Message}");
                    }
                }
            }
        }

        var server = await EventStoreBenchmark.DescribeServerAsync(postgres, cancellationToken);
        ResultsFile.Publish(args, Name, Render(args, server, rows, failures, durableEvents, kafkaEvents, memoryEvents));
    }

    private static readonly (string Name, Func<string, int, CancellationToken, Task<Row>> Run)[] KafkaContenders =
    [
        ("Herald Kafka", HeraldKafkaAsync),
        ("Streamiz Kafka", (topic, count, ct) => StreamizAsync(topic, count, changelog: false, ct)),
        ("Streamiz Kafka, changelog", (topic, count, ct) => StreamizAsync(topic, count, changelog: true, ct)),
    ];

    private static BenchOrder OrderAt(int i) => new("p" + (i % Products).ToString(CultureInfo.InvariantCulture), 1 + (i % 7), T0.AddSeconds(i));

    private static StreamTopology Topology(Action<StreamOutput<Windowed<string>, decimal>> emitted)
    {
        var builder = new StreamBuilder();
        Define(builder, byKey: false, emitted);
        return builder.Build();
    }

    // The aggregation every Herald row runs. byKey: the records come keyed by product already (a Kafka topic keyed by
    // it), as the Streamiz row reads them with GroupByKey; otherwise they are re-keyed by product.
    private static void Define(StreamBuilder builder, bool byKey, Action<StreamOutput<Windowed<string>, decimal>> emitted)
    {
        var source = builder.Stream<BenchOrder>(o => o.PlacedAt);
        (byKey ? source.GroupByKey() : source.GroupBy(o => o.ProductId))
            .WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(1)))
            .SuppressUntilWindowCloses()
            .RetainClosedWindowsFor(TimeSpan.Zero)
            .Aggregate(() => 0m, (_, o, sum) => sum + o.Amount, "revenue")
            .ToStream()
            .To(StreamSinks.Callback(emitted));
    }

    private static async Task<Row> OverAllAsync(string name, int count, Action<Herald.Hosting.HeraldBuilder> configure, CancellationToken cancellationToken)
    {
        var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        builder.Logging.AddConsole().SetMinimumLevel(LogLevel.Warning);
        builder.Services.AddHerald(h =>
        {
            h.AddMessageType<BenchOrder>("bench-order");
            configure(h);
        });
        using var host = builder.Build();
        await host.StartAsync(cancellationToken);
        try
        {
            var events = host.Services.GetRequiredService<IEventStore>();
            var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
            const int PerStream = 100;
            for (var i = 0; i < count; i += PerStream)
            {
                var batch = Enumerable.Range(i, Math.Min(PerStream, count - i)).Select(j => envelopes.Create(OrderAt(j))).ToArray();
                await events.AppendAsync("order-" + (i / PerStream).ToString(CultureInfo.InvariantCulture), ExpectedVersion.NoStream, batch, cancellationToken);
            }

            var head = await events.GetLastPositionAsync(cancellationToken);
            long windows = 0;
            await using var processor = new StreamProcessor("bench", Topology(_ => windows++), host.Services, new StreamProcessorOptions { CommitEvery = 500 });
            var cpu = Cpu();
            var clock = Stopwatch.StartNew();
            await processor.StartAsync(cancellationToken);
            await processor.WaitForPositionAsync(head, cancellationToken).WaitAsync(TimeSpan.FromMinutes(5), cancellationToken);
            clock.Stop();
            var cpuTime = Cpu() - cpu;
            Check(windows, count);
            return new Row(name, count, clock.Elapsed, cpuTime, processor.CommitTime, processor.Commits, "$all read through the catch-up subscription in pages of 500, decode, aggregate; state + checkpoint committed every 500 events");
        }
        finally
        {
            await host.StopAsync(CancellationToken.None);
        }
    }

    private static async Task<Row> EngineAsync(int count)
    {
        long windows = 0;
        var task = new StreamTask(Topology(_ => windows++), TimeSpan.Zero);
        var channel = Channel.CreateBounded<BenchOrder>(new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true, SingleWriter = true });
        var cpu = Cpu();
        var clock = Stopwatch.StartNew();
        var producer = Produce(channel.Writer, count);
        var handled = 0;
        await foreach (var order in channel.Reader.ReadAllAsync())
        {
            task.Process(order, order.ProductId, order.PlacedAt);
            var outputs = task.TakeOutputs();
            if (outputs.Count > 0)
            {
                windows += outputs.Count;
            }

            if (++handled % 500 == 0)
            {
                _ = task.TakeChanges(); // what a commit would serialize
            }
        }

        await producer;
        clock.Stop();
        Check(windows, count);
        return new Row("Herald engine", count, clock.Elapsed, Cpu() - cpu, TimeSpan.Zero, 0, "the same topology in one StreamTask fed from a bounded Channel<T>; no decode, no I/O");
    }

    private static async Task<Row> ChannelBaselineAsync(int count)
    {
        var channel = Channel.CreateBounded<BenchOrder>(new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true, SingleWriter = true });
        var open = new Dictionary<(string Product, long Start), decimal>();
        var closing = new PriorityQueue<(string Product, long Start), long>();
        var size = TimeSpan.FromMinutes(1).Ticks;
        long windows = 0;
        var watermark = long.MinValue;
        var cpu = Cpu();
        var clock = Stopwatch.StartNew();
        var producer = Produce(channel.Writer, count);
        await foreach (var order in channel.Reader.ReadAllAsync())
        {
            var time = order.PlacedAt.UtcTicks;
            watermark = Math.Max(watermark, time);
            var start = time - ((time - DateTimeOffset.UnixEpoch.UtcTicks) % size);
            var key = (order.ProductId, start);
            if (start + size <= watermark)
            {
                continue; // late
            }

            if (!open.TryGetValue(key, out var sum))
            {
                closing.Enqueue(key, start + size);
            }

            open[key] = sum + order.Amount;
            while (closing.TryPeek(out var due, out var end) && end <= watermark)
            {
                closing.Dequeue();
                open.Remove(due);
                windows++;
            }
        }

        await producer;
        clock.Stop();
        Check(windows, count);
        return new Row("Channel<T> loop", count, clock.Elapsed, Cpu() - cpu, TimeSpan.Zero, 0, "hand-written: a dictionary per (product, window), a priority queue of window ends, watermark = max event time; no state store, no decode");
    }

    private static Task Produce(ChannelWriter<BenchOrder> writer, int count) => Task.Run(async () =>
    {
        for (var i = 0; i < count; i++)
        {
            await writer.WriteAsync(OrderAt(i));
        }

        writer.Complete();
    });

    private static long ExpectedWindows(int count) => ((count - 1) / 60) * (long)Products;

    // Every window but the last minute's has closed: a lost or repeated event would change nothing here, but a broken
    // window close would.
    private static void Check(long windows, int count)
    {
        var expected = ExpectedWindows(count);
        if (windows != expected)
        {
            throw new InvalidOperationException($"Expected {expected} closed windows, saw {windows}.");
        }
    }

    private static string Render(BenchmarkArgs args, string server, List<Row> rows, List<string> failures, int durableEvents, int kafkaEvents, int memoryEvents)
    {
        var text = ResultsFile.Open(args, "streams", "Stream processing: windowed aggregation", ("Servers", $"{server}; SQLite file in the temp directory"));
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"The work: orders for {Products} products, one per second of event time, aggregated into revenue per product in 1-minute tumbling windows, each window emitted once when the watermark passes its end (allowed out-of-orderness 0). Over `$all`: {durableEvents} events appended first (not timed), then a new processor is timed from start until its commit covers the last position. In memory: {memoryEvents} events through a bounded `Channel<T>`.");
        text.AppendLine("Every run checks the number of closed windows. \"commit µs/event\" is the time spent in the processor's commits (state changes + checkpoint in one unit of work) ÷ events: the state checkpoint cost per event.");
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Over Kafka ({(MockCluster.IsMock ? "librdkafka's mock cluster: three brokers inside this process, so their CPU is in every Kafka row's CPU column and their speed says nothing of a real cluster's; only the ratios mean anything; it keeps about 5 MB per partition, so the Kafka rows use at most 15,000 events" : "the cluster HERALD_KAFKA_BOOTSTRAP names")}): {kafkaEvents} events are first sent (not timed) to a topic of one partition, each record keyed by its product with Herald's CloudEvents headers and a JSON body; each Kafka contender then reads that topic from the start with its own consumer group and is timed from the start of its client (group join and all) until its last window closes. Streamiz.Kafka.Net {PackageVersion.Of(typeof(Streamiz.Kafka.Net.KafkaStream))} and Herald both take event time from the order's `PlacedAt` and group by the record key. \"first window after\" is when the first window closed (event 60: the client's start-up, group join and assignment, is most of it); \"events/s after it\" is the rate from then to the last window, the rate once running.");
        text.AppendLine();
        var table = new MarkdownTable("Contender", "events", "events/s (median)", "range", "CPU µs/event", "commits", "commit µs/event", "first window after", "events/s after it");
        foreach (var group in rows.GroupBy(r => r.Name))
        {
            var rates = group.Select(r => r.Events / r.Elapsed.TotalSeconds).Order().ToArray();
            var median = group.OrderBy(r => r.Events / r.Elapsed.TotalSeconds).ElementAt(rates.Length / 2);
            table.Add(
                group.Key,
                F(median.Events),
                F(rates[rates.Length / 2]),
                $"{F(rates[0])}–{F(rates[^1])}",
                (median.Cpu.TotalMicroseconds / median.Events).ToString("0.00", CultureInfo.InvariantCulture),
                median.Commits == 0 ? "–" : F(median.Commits),
                median.Commits == 0 ? "–" : (median.CommitTime.TotalMicroseconds / median.Events).ToString("0.00", CultureInfo.InvariantCulture),
                median.FirstWindow is { } first ? first.TotalSeconds.ToString("0.00 s", CultureInfo.InvariantCulture) : "–",
                median.RunningRate is { } running ? F(running) : "–");
        }

        text.Append(table);
        text.AppendLine();
        var baseline = rows.Where(r => r.Name == "Channel<T> loop").Select(r => r.Events / r.Elapsed.TotalSeconds).Order().ToArray();
        var engine = rows.Where(r => r.Name == "Herald engine").Select(r => r.Events / r.Elapsed.TotalSeconds).Order().ToArray();
        if (baseline.Length > 0 && engine.Length > 0)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"Herald engine ÷ Channel<T> loop (median events/s): {(engine[engine.Length / 2] / baseline[baseline.Length / 2]).ToString("0.00", CultureInfo.InvariantCulture)}×. The engine pays for generality: boxed records, JSON state keys, a state store with change tracking per window.");
            text.AppendLine();
        }

        var heraldKafka = Median(rows, "Herald Kafka");
        foreach (var streamiz in new[] { "Streamiz Kafka", "Streamiz Kafka, changelog" })
        {
            if (heraldKafka is { } herald && Median(rows, streamiz) is { } other)
            {
                var running = herald.RunningRate is { } a && other.RunningRate is { } b ? $", {Ratio(a, b)}× events/s after the first window" : "";
                text.AppendLine(CultureInfo.InvariantCulture, $"Herald Kafka ÷ {streamiz} (medians): {Ratio(herald.Events / herald.Elapsed.TotalSeconds, other.Events / other.Elapsed.TotalSeconds)}× events/s{running}, {Ratio(herald.Cpu.TotalMicroseconds / herald.Events, other.Cpu.TotalMicroseconds / other.Events)}× CPU µs/event.");
                text.AppendLine();
            }
        }

        if (failures.Count > 0)
        {
            text.AppendLine("Runs that failed (not in the table):");
            text.AppendLine();
            foreach (var failure in failures)
            {
                text.AppendLine(CultureInfo.InvariantCulture, $"- {failure}");
            }

            text.AppendLine();
        }

        foreach (var row in rows.DistinctBy(r => r.Name))
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"- **{row.Name}**: {row.Setup}");
        }

        return text.ToString();
    }

    private static Row? Median(List<Row> rows, string name)
    {
        var group = rows.Where(r => r.Name == name).OrderBy(r => r.Events / r.Elapsed.TotalSeconds).ToArray();
        return group.Length == 0 ? null : group[group.Length / 2];
    }

    private static string Ratio(double a, double b) => (a / b).ToString("0.00", CultureInfo.InvariantCulture);

    private static TimeSpan Cpu()
    {
        using var process = Process.GetCurrentProcess();
        return process.TotalProcessorTime;
    }

    private static string F(double value) => value.ToString("#,0", CultureInfo.InvariantCulture);

    /// <summary>One measured run; <paramref name="FirstWindow"/>: when the first window closed (Kafka rows: the client's start-up shows there).</summary>
    private sealed record Row(string Name, int Events, TimeSpan Elapsed, TimeSpan Cpu, TimeSpan CommitTime, long Commits, string Setup, TimeSpan? FirstWindow = null)
    {
        /// <summary>Events/s from the first closed window to the last: the rate once the client runs.</summary>
        public double? RunningRate => FirstWindow is { } first && Elapsed > first ? (Events - 60) / (Elapsed - first).TotalSeconds : null;
    }
}

/// <summary>The benchmark's order event.</summary>
public sealed record BenchOrder(string ProductId, decimal Amount, DateTimeOffset PlacedAt);
