using System.Globalization;
using Herald.Benchmarks.Harness;
using Herald.Messages;
using Npgsql;

namespace Herald.Benchmarks.EventStore;

/// <summary>
/// Event store throughput (issue 3): single-event appends with 1 and 16 writers, batched appends, stream reads and a
/// <c>$all</c> scan, for Herald on SQLite and PostgreSQL and for Marten (Quick append mode) on the same PostgreSQL.
/// </summary>
internal sealed class EventStoreBenchmark : IBenchmark
{
    private const double TargetWritersVsMarten = 5.0;
    private const double TargetPostgresWritersVsMarten = 8.0;
    private const int TargetPostgresWritersRounds = 5;
    private const double TargetBatchVsMarten = 1.5;
    private const double TargetReadAllPerSecond = 200_000;
    private const double TargetSqliteBatchPerSecond = 40_000;
    private const int BatchSize = 100;
    private const int ReadStreamLength = 1_000;

    public string Name => "eventstore";

    public string Description => "event store appends (1/16 writers, batches of 100), stream reads, $all scan: Herald SQLite/PostgreSQL vs Marten";

    public async Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken)
    {
        // A full run measures the 5 rounds whose median issue 9's PostgreSQL target asks for.
        var repeat = args.Repeat ?? (args.Quick ? 1 : TargetPostgresWritersRounds);
        var postgres = Environment.GetEnvironmentVariable("HERALD_BENCH_POSTGRES") is { Length: > 0 } cs
            ? cs
            : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";
        var counts = args.Quick
            ? new Counts(SingleAppends: 100, WriterAppends: 50, Batches: 20, StreamReads: 3, ScanEvents: 10_000)
            : new Counts(SingleAppends: 1_000, WriterAppends: 500, Batches: 200, StreamReads: 20, ScanEvents: 100_000);
        var writers = 16;
        Scenario[] scenarios =
        [
            new("append, 1 writer", counts.SingleAppends, (c, ct) => Writers(c, 1, counts.SingleAppends, ct)),
            new($"append, {writers} writers", writers * counts.WriterAppends, (c, ct) => Writers(c, writers, counts.WriterAppends, ct)),
            new($"append batch of {BatchSize}, 1 writer", counts.Batches * BatchSize, async (c, ct) =>
            {
                for (var i = 0; i < counts.Batches; i++)
                {
                    await c.AppendBatchAsync(BatchSize, ct);
                }
            }),
            new($"read stream of {ReadStreamLength:N0}", counts.StreamReads * ReadStreamLength, async (c, ct) =>
            {
                for (var i = 0; i < counts.StreamReads; i++)
                {
                    Check(await c.ReadStreamAsync(ct), ReadStreamLength, c);
                }
            }),
            new($"read $all ({counts.ScanEvents:N0} events)", counts.ScanEvents, async (c, ct) => Check(await c.ReadAllAsync(counts.ScanEvents, ct), counts.ScanEvents, c)),
        ];

        Console.WriteLine($"eventstore: {(args.Quick ? "quick" : "full")} run, {repeat} measured round(s), PostgreSQL {Redact(postgres)}");
        var contenders = new List<IEventStoreContender>();
        var results = new List<(string Scenario, MeasurementSeries Series)>();
        var warmups = new List<(string Scenario, WarmupReport Report)>();
        using var groupSizes = new AppendGroupSizes();
        try
        {
            foreach (var create in new Func<IEventStoreContender>[]
            {
                HeraldEventStoreContender.Sqlite,
                () => HeraldEventStoreContender.Postgres(postgres),
                () => new MartenContender(postgres),
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

            foreach (var scenario in scenarios.Where(s => args.IncludesScenario(s.Name)))
            {
                if (scenario.Name.StartsWith("read stream", StringComparison.Ordinal))
                {
                    foreach (var c in contenders)
                    {
                        await c.CreateReadStreamAsync(ReadStreamLength, cancellationToken);
                    }
                }
                else if (scenario.Name.StartsWith("read $all", StringComparison.Ordinal))
                {
                    // Top every store up to the scan size with unmeasured batches (earlier scenarios wrote most of it).
                    foreach (var c in contenders)
                    {
                        while (await c.ReadAllAsync(counts.ScanEvents, cancellationToken) < counts.ScanEvents)
                        {
                            await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => c.AppendBatchAsync(1_000, cancellationToken)));
                        }
                    }
                }

                Console.WriteLine($"  {scenario.Name}: warm-up");

                // Warm-up: the scenario itself, every contender, until the JIT settled (connections are open by then too).
                var warmed = await JitWarmup.RunAsync(async _ =>
                {
                    foreach (var c in contenders)
                    {
                        await scenario.Run(c, cancellationToken);
                    }
                }, args.Quick);
                warmups.Add((scenario.Name, warmed));
                Console.WriteLine($"    {warmed.Describe()}");

                var runs = contenders.ToDictionary(c => c, _ => new List<Measurement>());
                for (var round = 1; round <= repeat; round++)
                {
                    Console.Write($"    round {round}:");
                    foreach (var c in contenders)
                    {
                        // The PostgreSQL store's commit groups are counted in the measured 16-writer rounds only.
                        var counted = c.Name == "Herald PostgreSQL" && scenario.Name.Contains("16 writers", StringComparison.Ordinal);
                        var m = await Measurement.TakeAsync(scenario.Events, () => counted ? groupSizes.CountDuringAsync(() => scenario.Run(c, cancellationToken)) : scenario.Run(c, cancellationToken));
                        runs[c].Add(m);
                        Console.Write($" {c.Name} {m.MessagesPerSecond:N0} ev/s;");
                    }

                    Console.WriteLine();
                }

                results.AddRange(contenders.Select(c => (scenario.Name, new MeasurementSeries(c.Name, c.Setup, runs[c]))));
            }
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
                    Console.Error.WriteLine($"  cleaning up {c.Name} failed: {ex.Message}");
                }
            }
        }

        var server = await DescribeServerAsync(postgres, cancellationToken);
        var markdown = Render(args, repeat, counts, server, results, warmups, contenders.Select(c => (c.Name, c.Setup)).ToList(), groupSizes.Describe());
        ResultsFile.Publish(args, Name, markdown);
    }

    private static Task Writers(IEventStoreContender contender, int writers, int appendsEach, CancellationToken cancellationToken) =>
        Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < appendsEach; i++)
            {
                await contender.AppendOneAsync(w, i, cancellationToken);
            }
        }, cancellationToken)));

    private static void Check(int read, int expected, IEventStoreContender contender)
    {
        if (read != expected)
        {
            throw new InvalidOperationException($"{contender.Name} read {read} events, expected {expected}.");
        }
    }

    internal static string Redact(string connectionString) =>
        string.Join(';', connectionString.Split(';').Where(p => !p.StartsWith("Password", StringComparison.OrdinalIgnoreCase)));

    // What the results file says about the database is read from it, not written by hand.
    internal static async Task<string> DescribeServerAsync(string connectionString, CancellationToken cancellationToken)
    {
        var host = new NpgsqlConnectionStringBuilder(connectionString).Host ?? "?";
        var where = host is "127.0.0.1" or "localhost" or "::1" ? " (same machine)" : "";
        try
        {
            await using var connection = new NpgsqlConnection(connectionString);
            await connection.OpenAsync(cancellationToken);
            await using var command = new NpgsqlCommand("SELECT current_setting('server_version'), current_setting('synchronous_commit'), current_setting('fsync')", connection);
            await using var reader = await command.ExecuteReaderAsync(cancellationToken);
            await reader.ReadAsync(cancellationToken);
            return $"PostgreSQL {reader.GetString(0)} on {host}{where}, synchronous_commit {reader.GetString(1)}, fsync {reader.GetString(2)}";
        }
        catch (NpgsqlException ex)
        {
            return $"PostgreSQL on {host}{where} (version not read: {ex.Message})";
        }
    }

    private static string Render(BenchmarkArgs args, int repeat, Counts counts, string server, List<(string Scenario, MeasurementSeries Series)> results, List<(string Scenario, WarmupReport Report)> warmups, List<(string Name, string Setup)> setups, string? groupSizes)
    {
        var text = ResultsFile.Open(args, "eventstore", "Event store throughput", ("Servers", $"{server}; SQLite file in the temp directory"));
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Each scenario: warm-up passes of every contender until the JIT settled (below), then {repeat} measured round(s) interleaving the contenders; the table shows the median events/s and the range.");
        text.AppendLine();
        foreach (var (scenario, warmed) in warmups)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"- {scenario}: {warmed.Describe()}");
        }

        text.AppendLine(CultureInfo.InvariantCulture, $"Counts: 1 writer × {counts.SingleAppends:N0} single-event appends; 16 writers × {counts.WriterAppends:N0} single-event appends (each writer over its own 64 streams); {counts.Batches:N0} appends of {BatchSize} events to new streams; {counts.StreamReads} reads of a {ReadStreamLength:N0}-event stream; one scan of the first {counts.ScanEvents:N0} events of the global log.");
        var bodyBytes = new SystemTextJsonMessageSerializer().Serialize(AccountCredited.Next(1), typeof(AccountCredited)).Length;
        text.AppendLine(CultureInfo.InvariantCulture, $"Every event is built as the real API would: Herald gets an envelope from `EnvelopeFactory` (Guid v7 id, registered type `account-credited`, a System.Text.Json body of about {bodyBytes} bytes); Marten gets the same `AccountCredited` object and serializes it itself. Reads decode every event's body into an `AccountCredited` on both sides (Herald: the registered type through `SystemTextJsonMessageSerializer`, as the aggregate repository does; Marten: `IEvent.Data`, which it deserializes) and count only those.");
        text.AppendLine("\"CPU µs/event\" is this process's CPU time over the run ÷ events (the database server's CPU is not included).");
        text.AppendLine();
        var table = new MarkdownTable("Scenario", "Contender", "Events", "events/s (median)", "range events/s", "CPU µs/event", "bytes/event", "other CPU (max)");
        foreach (var (scenario, s) in results)
        {
            table.Add(scenario, s.Contender, F(s.Messages), F(s.MessagesPerSecond), $"{F(s.MinMessagesPerSecond)}–{F(s.MaxMessagesPerSecond)}", s.CpuMicrosecondsPerMessage.ToString("0.0", CultureInfo.InvariantCulture), F(s.BytesPerMessage), s.MaxForeignCpu is { } f ? f.ToString("P0", CultureInfo.InvariantCulture) : "–");
        }

        text.Append(table);
        text.AppendLine();
        var ratios = new MarkdownTable("Scenario", "Herald SQLite ×Marten", "Herald PostgreSQL ×Marten");
        foreach (var scenario in results.Select(r => r.Scenario).Distinct())
        {
            ratios.Add(scenario, Ratio(results, scenario, "Herald SQLite"), Ratio(results, scenario, "Herald PostgreSQL"));
        }

        text.AppendLine("Ratios (events/s of Herald ÷ events/s of Marten, same scenario; higher is better for Herald):");
        text.AppendLine();
        text.Append(ratios);
        text.AppendLine();
        text.AppendLine("Targets (issues 3 and 9):");
        text.AppendLine();
        foreach (var herald in new[] { "Herald SQLite", "Herald PostgreSQL" })
        {
            var writers = RatioValue(results, results.FirstOrDefault(r => r.Scenario.Contains("16 writers", StringComparison.Ordinal)).Scenario, herald);
            var batch = RatioValue(results, results.FirstOrDefault(r => r.Scenario.Contains("batch", StringComparison.Ordinal)).Scenario, herald);
            var all = Rate(results, results.FirstOrDefault(r => r.Scenario.StartsWith("read $all", StringComparison.Ordinal)).Scenario, herald);
            text.AppendLine(CultureInfo.InvariantCulture, $"- {herald}: 16 writers ≥ {TargetWritersVsMarten:0}× Marten: {Verdict(writers, TargetWritersVsMarten, "×")}; batches of {BatchSize} ≥ {TargetBatchVsMarten:0.0}× Marten: {Verdict(batch, TargetBatchVsMarten, "×")}; $all ≥ {F(TargetReadAllPerSecond)} events/s: {Verdict(all, TargetReadAllPerSecond, " ev/s")}");
        }

        var pgWriters = RatioValue(results, results.FirstOrDefault(r => r.Scenario.Contains("16 writers", StringComparison.Ordinal)).Scenario, "Herald PostgreSQL");
        var pgVerdict = repeat < TargetPostgresWritersRounds && pgWriters is not null
            ? $"not judged ({repeat} round(s); the target is the median of at least {TargetPostgresWritersRounds}: pass --repeat {TargetPostgresWritersRounds})"
            : Verdict(pgWriters, TargetPostgresWritersVsMarten, "×");
        text.AppendLine(CultureInfo.InvariantCulture, $"- Herald PostgreSQL, 16 writers ≥ {TargetPostgresWritersVsMarten:0}× Marten as the median of at least {TargetPostgresWritersRounds} rounds (issue 9): {pgVerdict}");
        var sqliteBatch = Rate(results, results.FirstOrDefault(r => r.Scenario.Contains("batch", StringComparison.Ordinal)).Scenario, "Herald SQLite");
        text.AppendLine(CultureInfo.InvariantCulture, $"- Herald SQLite batched appends ≥ {F(TargetSqliteBatchPerSecond)} events/s: {Verdict(sqliteBatch, TargetSqliteBatchPerSecond, " ev/s")}");
        if (groupSizes is not null)
        {
            text.AppendLine();
            text.AppendLine(CultureInfo.InvariantCulture, $"Herald PostgreSQL's grouped commits in the measured 16-writer rounds: {groupSizes}.");
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

    private static double? Rate(List<(string Scenario, MeasurementSeries Series)> results, string? scenario, string contender) =>
        results.FirstOrDefault(r => r.Scenario == scenario && r.Series.Contender == contender).Series?.MessagesPerSecond;

    private static double? RatioValue(List<(string Scenario, MeasurementSeries Series)> results, string? scenario, string contender) =>
        Rate(results, scenario, contender) is { } h && Rate(results, scenario, "Marten") is { } m && m > 0 ? h / m : null;

    private static string Ratio(List<(string Scenario, MeasurementSeries Series)> results, string scenario, string contender) =>
        RatioValue(results, scenario, contender) is { } r ? r.ToString("0.00", CultureInfo.InvariantCulture) + "×" : "–";

    private static string Verdict(double? value, double target, string unit) => value switch
    {
        null => "not measured",
        { } v when v >= target => $"**met** ({Show(v, unit)})",
        { } v => $"**missed** ({Show(v, unit)}, {v / target:P0} of the target)",
    };

    private static string Show(double value, string unit) =>
        unit == "×" ? value.ToString("0.00", CultureInfo.InvariantCulture) + "×" : F(value) + unit;

    private static string F(double value) => value.ToString("N0", CultureInfo.InvariantCulture);

    private sealed record Scenario(string Name, long Events, Func<IEventStoreContender, CancellationToken, Task> Run);

    private readonly record struct Counts(int SingleAppends, int WriterAppends, int Batches, int StreamReads, int ScanEvents);
}
