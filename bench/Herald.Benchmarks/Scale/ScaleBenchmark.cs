using System.Diagnostics;
using System.Globalization;
using System.Text;
using Herald.Benchmarks.EventStore;
using Herald.Benchmarks.Harness;
using Herald.Postgres;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Transport;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Transport;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Herald.Benchmarks.Scale;

/// <summary>
/// Issue 16: the cost of store and queue operations as the data grows. Event stores (Herald PostgreSQL and SQLite, Marten)
/// are grown in steps by bulk appends and measured at each; the queues get a growing backlog; the PostgreSQL outbox and
/// dead-letter tables grow too. Bounded by <c>--max-events</c> and <c>--max-seconds</c>: a step that would not fit in the
/// time left is not started. Every row is a curve, with cost(largest)/cost(first) against the 1.5× target.
/// </summary>
internal sealed class ScaleBenchmark : IBenchmark
{
    private const int ReadEvents = 20_000;
    private const int BatchEvents = 20_000;
    private const int ClaimAckMessages = 3_000;
    private const int RelayMessages = 2_000;
    private static readonly TimeSpan WriterTime = TimeSpan.FromSeconds(2);
    private static readonly long[] Steps = [100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 30_000_000];
    private static readonly long[] QuickSteps = [10_000, 30_000];

    public string Name => "scale";

    public string Description => "cost per event/message as stores, backlogs and tables grow (--max-events, --max-seconds): PostgreSQL, SQLite, Marten";

    public async Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken)
    {
        var postgres = Environment.GetEnvironmentVariable("HERALD_BENCH_POSTGRES") is { Length: > 0 } cs
            ? cs
            : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";
        var maxEvents = args.MaxEvents ?? (args.Quick ? 30_000 : 10_000_000);
        var budget = TimeSpan.FromSeconds(args.MaxSeconds ?? (args.Quick ? 120 : 2_100));
        var steps = (args.Quick ? QuickSteps : Steps).Where(s => s <= maxEvents).ToList();
        if (steps.Count == 0)
        {
            steps.Add(maxEvents);
        }

        var clock = Stopwatch.StartNew();
        var notes = new List<string>();
        await using var admin = NpgsqlDataSource.Create(postgres);
        var server = await DescribeServerAsync(admin, cancellationToken);
        Console.WriteLine($"scale: steps {string.Join(", ", steps.Select(Curve.Size))}, bound {budget.TotalSeconds:0} s; {server}");

        // Shares of the time bound: the event stores take the most (they load the most), then the queues, then the tables.
        var storeCurves = await RunEventStoresAsync(args, postgres, admin, steps, clock.Elapsed + (budget * 0.7), clock, notes, cancellationToken);
        var queueCurves = await RunQueuesAsync(args, postgres, admin, steps, budget * 0.85, clock, notes, cancellationToken);
        var tableCurves = await RunTablesAsync(args, postgres, admin, steps, budget, clock, notes, cancellationToken);

        var text = ResultsFile.Open(args, Name, "Scale: cost per event and message as the data grows", ("PostgreSQL", server));
        text.AppendLine();
        text.AppendLine(string.Create(CultureInfo.InvariantCulture, $"Asked for up to {Curve.Size(maxEvents)} events/messages/rows within {budget.TotalSeconds:0} s; the run took {clock.Elapsed.TotalSeconds:0} s. ") +
            "A step is only started when the time left covers it (predicted from the previous step's rates, plus 20 %), so the largest size reached is the last column filled; Herald's stores have the first claim on the time, and Marten takes a step only when Herald's remaining steps still fit after it. " +
            "Between steps the data grows as a bulk import would: the event stores by appends of 10,000 events to new streams from 4 writers; the queue backlogs, the outbox and the dead letters by SQL statements writing rows like the stores' own, vacuumed afterwards on PostgreSQL (the outbox and dead letters also analyzed, as an import is finished, so autovacuum's analyze of the new rows does not run during the step's measurements). Every measurement goes through the public API. " +
            "Rates are per second (higher is better); memory is the process's peak working set while a catch-up subscription read the whole store from position 0. " +
            "The ratio is cost(largest)/cost(first column): the first value over the last for a rate, the last over the first for memory or latency. Target (issue 16): ≤ 1.5×.");
        text.AppendLine();
        foreach (var (title, body) in storeCurves.Concat(queueCurves).Concat(tableCurves))
        {
            text.AppendLine("## " + title);
            text.AppendLine();
            text.Append(body);
            text.AppendLine();
        }

        if (notes.Count > 0)
        {
            text.AppendLine("## Notes");
            text.AppendLine();
            foreach (var note in notes)
            {
                text.AppendLine("- " + note);
            }
        }

        ResultsFile.Publish(args, Name, text.ToString());
    }

    private static async Task<List<(string Title, string Body)>> RunEventStoresAsync(
        BenchmarkArgs args, string postgres, NpgsqlDataSource admin, List<long> steps, TimeSpan deadline, Stopwatch clock, List<string> notes, CancellationToken cancellationToken)
    {
        var pgSchema = $"herald_scale_{Guid.NewGuid():N}"[..24];
        var sqlitePath = Path.Combine(Path.GetTempPath(), $"herald-scale-{Guid.NewGuid():N}.db");
        var stores = new List<ScaleEventStore>();
        if (args.Includes("Herald PostgreSQL"))
        {
            stores.Add(new HeraldScaleStore(
                "Herald PostgreSQL",
                async ct => await PostgresEventStoreFactory.CreateAsync(postgres, new PostgresStoreOptions { Schema = pgSchema }, ct),
                () => HeraldEventStoreContender.DropSchemaAsync(postgres, pgSchema)));
        }

        if (args.Includes("Herald SQLite"))
        {
            stores.Add(new HeraldScaleStore(
                "Herald SQLite",
                async ct => await SqliteEventStoreFactory.OpenAsync(sqlitePath, cancellationToken: ct),
                () => HeraldEventStoreContender.DeleteSqliteFiles(sqlitePath)));
        }

        if (args.Includes("Marten"))
        {
            stores.Add(new MartenScaleStore(postgres));
        }

        var curves = new Dictionary<string, List<Curve>>();
        var diagnostics = new MarkdownTable("events in store", "heap MB", "indexes MB", "pkey MB", "(stream, version) MB", "event_id MB",
            "checkpoints in step", "buffers written in step", "index blocks read / hit in step", "autovacuum+analyze runs", "WAL MB in step");
        var sqliteFile = new MarkdownTable("events in store", "file MB", "WAL MB");
        var timings = new MarkdownTable("store", "step", "seconds", "predicted", "of which fill", "fill ev/s");
        var probe = new PostgresProbe(admin, pgSchema);
        PostgresProbe.Snapshot? before = null;
        try
        {
            foreach (var store in stores)
            {
                await store.StartAsync(cancellationToken);
                curves[store.Name] =
                [
                    new Curve("batch append (100 events per append, 1 writer; median of 3 parts)", "ev/s", true),
                    new Curve("single-event appends, 16 writers, 2 s", "ev/s", true),
                    new Curve($"$all read of {Math.Min(ReadEvents, steps[0] / 4):N0} events from the middle (median of 3 reads, as every read below)", "ev/s", true),
                ];
                curves[store.Name].AddRange(store.MoreReads(Math.Min(ReadEvents, (int)(steps[0] / 4))).Select(n => new Curve(n, "ev/s", true)));
                if (store.HasSubscription)
                {
                    curves[store.Name].Add(new Curve("catch-up subscription from 0 to the end", "ev/s", true));
                    curves[store.Name].Add(new Curve("peak working set during the catch-up", "MB", false));
                }
            }

            // A warm-up on a small store, so the first step does not pay for JIT compilation and cold pools.
            foreach (var store in stores)
            {
                // Enough calls of each measured path for the JIT's tiers to settle (the first column was low with 10 appends).
                await store.GrowAsync(Math.Min(10_000, steps[0] / 2), cancellationToken);
                await store.MeasureBatchesAsync(Math.Min(10_000, (int)steps[0] / 10), cancellationToken);
                await store.MeasureWritersAsync(16, TimeSpan.FromSeconds(1), cancellationToken);
                for (var i = 0; i < 5; i++)
                {
                    await store.MeasureReadMiddleAsync(1_000, cancellationToken);
                    await store.MeasureMoreReadsAsync(1_000, cancellationToken);
                }

                if (store.HasSubscription)
                {
                    await store.MeasureCatchUpAsync(cancellationToken);
                }
            }

            // The warm-up's small fill says little about a bulk load's rate; a short one in large batches says more.
            foreach (var store in stores)
            {
                await store.GrowAsync(store.Count + Math.Min(40_000, steps[0] / 4), cancellationToken);
            }

            if (stores.Any(s => s.Name == "Herald PostgreSQL"))
            {
                before = await probe.ReadAsync(cancellationToken);
            }

            // Each store goes on to the next step while its step fits in the time left. Herald's stores have the first claim
            // on the time: Marten (the comparison) takes a step only if the Herald stores' remaining steps, up to the largest,
            // still fit after it, so a slow comparison caps its own curve rather than Herald's.
            var running = new List<ScaleEventStore>(stores);
            foreach (var step in steps)
            {
                foreach (var store in running.ToList())
                {
                    var predicted = store.Predict(store.Count, step);
                    var reserved = store.HasSubscription ? 0 : running.Where(s => s.HasSubscription).Sum(s => PredictRest(s, step));
                    var left = (deadline - clock.Elapsed).TotalSeconds;
                    if (predicted + reserved > left)
                    {
                        notes.Add(reserved > 0
                            ? $"{store.Name} stopped before {Curve.Size(step)} events: about {predicted:0} s predicted for that step, and Herald's stores' remaining steps need about {reserved:0} s of the {left:0} s left of the event stores' share."
                            : $"{store.Name} stopped before {Curve.Size(step)} events: about {predicted:0} s predicted, {left:0} s left of the event stores' share.");
                        running.Remove(store);
                        continue;
                    }

                    var stepClock = Stopwatch.StartNew();

                    // Grow to a little under the step, so that the measurements (which append too) end near it.
                    await store.GrowAsync(step - BatchEvents, cancellationToken);
                    var filled = stepClock.Elapsed;
                    var c = curves[store.Name];
                    c[0].Points[step] = await store.MeasureBatchesAsync(BatchEvents, cancellationToken);
                    c[1].Points[step] = await store.MeasureWritersAsync(16, WriterTime, cancellationToken);
                    var readEvents = (int)Math.Min(ReadEvents, steps[0] / 4);
                    c[2].Points[step] = await store.MeasureReadMiddleAsync(readEvents, cancellationToken);
                    var more = await store.MeasureMoreReadsAsync(readEvents, cancellationToken);
                    for (var i = 0; i < more.Length; i++)
                    {
                        c[3 + i].Points[step] = more[i];
                    }

                    var measured = stepClock.Elapsed - filled;
                    if (store.HasSubscription)
                    {
                        var catchUp = Stopwatch.StartNew();
                        var (rate, peak) = await store.MeasureCatchUpAsync(cancellationToken);
                        store.CatchUpRate = store.Count / catchUp.Elapsed.TotalSeconds;
                        c[^2].Points[step] = rate;
                        c[^1].Points[step] = peak / 1048576.0;
                    }

                    store.MeasureSeconds = measured.TotalSeconds;
                    Console.WriteLine($"  {store.Name} at {Curve.Size(store.Count)} ({clock.Elapsed.TotalSeconds:0} s; step {stepClock.Elapsed.TotalSeconds:0} s, predicted {predicted:0} s, fill {filled.TotalSeconds:0} s): " +
                        string.Join("; ", c.Select(x => $"{x.Name} {x.Points[step]:N0} {x.Unit}")) + $"; bulk load {store.LoadRate:N0} ev/s");
                    timings.Add(store.Name, Curve.Size(step), stepClock.Elapsed.TotalSeconds.ToString("0", CultureInfo.InvariantCulture),
                        predicted.ToString("0", CultureInfo.InvariantCulture), filled.TotalSeconds.ToString("0", CultureInfo.InvariantCulture),
                        store.LoadRate.ToString("N0", CultureInfo.InvariantCulture));

                    if (store.Name == "Herald PostgreSQL" && before is not null)
                    {
                        var now = await probe.ReadAsync(cancellationToken);
                        diagnostics.Add(
                            Curve.Size(step), Mb(now.Heap), Mb(now.Indexes), Mb(now.PrimaryKey), Mb(now.StreamVersion), Mb(now.EventId),
                            (now.Checkpoints - before.Checkpoints).ToString(CultureInfo.InvariantCulture),
                            (now.BuffersWritten - before.BuffersWritten).ToString("N0", CultureInfo.InvariantCulture),
                            $"{now.IndexBlocksRead - before.IndexBlocksRead:N0} / {now.IndexBlocksHit - before.IndexBlocksHit:N0}",
                            now.Autovacuums.ToString(CultureInfo.InvariantCulture),
                            Mb(now.WalBytes - before.WalBytes));
                        before = now;
                    }

                    if (store.Name == "Herald SQLite")
                    {
                        sqliteFile.Add(Curve.Size(step), Mb(FileSize(sqlitePath)), Mb(FileSize(sqlitePath + "-wal")));
                    }
                }
            }

            // The time a store's steps from this one to the largest would take, each from the previous step's size.
            double PredictRest(ScaleEventStore s, long step)
            {
                var from = s.Count;
                var total = 0.0;
                foreach (var next in steps.Where(x => x >= step))
                {
                    total += s.Predict(from, next);
                    from = next;
                }

                return total;
            }
        }
        finally
        {
            foreach (var store in stores)
            {
                await store.DisposeAsync();
            }
        }

        var sections = curves.Select(kv => ($"Event store: {kv.Key}", Curve.Table("operation", kv.Value).ToString())).ToList();
        if (stores.Any(s => s.Name == "Herald PostgreSQL"))
        {
            sections.Add(("Herald PostgreSQL: the events table and the server at each step", diagnostics.ToString()));
        }

        if (stores.Any(s => s.Name == "Herald SQLite"))
        {
            sections.Add(("Herald SQLite: the file at each step", sqliteFile.ToString()));
        }

        if (stores.Count > 0)
        {
            sections.Add(("Event stores: time per step (fill + measurements + catch-up) against the prediction", timings.ToString()));
        }

        return sections;
    }

    private static async Task<List<(string Title, string Body)>> RunQueuesAsync(
        BenchmarkArgs args, string postgres, NpgsqlDataSource admin, List<long> steps, TimeSpan deadline, Stopwatch clock, List<string> notes, CancellationToken cancellationToken)
    {
        var pgSchema = $"herald_scaleq_{Guid.NewGuid():N}"[..24];
        var sqlitePath = Path.Combine(Path.GetTempPath(), $"herald-scaleq-{Guid.NewGuid():N}.db");
        var queues = new List<ScaleQueue>();
        if (args.Includes("PostgreSQL queue"))
        {
            queues.Add(new ScaleQueue("PostgreSQL queue", async ct => await PostgresQueueTransportFactory.CreateAsync(postgres, o => o.Schema = pgSchema, ct),
                (count, ct) => QueueFills.PostgresAsync(admin, pgSchema, count, ct), () => HeraldEventStoreContender.DropSchemaAsync(postgres, pgSchema)));
        }

        if (args.Includes("SQLite queue"))
        {
            queues.Add(new ScaleQueue("SQLite queue", async ct => await SqliteQueueTransportFactory.OpenAsync(sqlitePath, cancellationToken: ct),
                (count, ct) => QueueFills.SqliteAsync(sqlitePath, count, ct), () => HeraldEventStoreContender.DeleteSqliteFiles(sqlitePath)));
        }

        var curves = new Dictionary<string, List<Curve>>();
        try
        {
            foreach (var queue in queues)
            {
                await queue.StartAsync(cancellationToken);
                await queue.SeedAsync((int)Math.Min(2_000, steps[0] / 4), cancellationToken);
                await queue.GrowAsync(Math.Min(20_000, steps[0] / 2), cancellationToken);
                await queue.MeasureSendAsync(TimeSpan.FromMilliseconds(500), cancellationToken);
                await queue.MeasureClaimAckAsync(500, cancellationToken);
                curves[queue.Name] =
                [
                    new Curve("send, 16 senders, 2 s", "msg/s", true),
                    new Curve($"claim + ack of {ClaimAckMessages:N0} messages (1 consumer, concurrency 4)", "msg/s", true),
                ];
            }

            foreach (var step in steps)
            {
                var predicted = queues.Sum(q => 1.2 * (((step - q.Backlog) / q.LoadRate) + q.MeasureSeconds));
                if (clock.Elapsed + TimeSpan.FromSeconds(predicted) > deadline)
                {
                    notes.Add($"Queues stopped before a backlog of {Curve.Size(step)}: about {predicted:0} s predicted, {(deadline - clock.Elapsed).TotalSeconds:0} s left of their share.");
                    break;
                }

                foreach (var queue in queues)
                {
                    await queue.GrowAsync(step, cancellationToken);
                    var c = curves[queue.Name];
                    var measuring = Stopwatch.StartNew();
                    c[0].Points[step] = await queue.MeasureSendAsync(WriterTime, cancellationToken);
                    c[1].Points[step] = await queue.MeasureClaimAckAsync(ClaimAckMessages, cancellationToken);
                    queue.MeasureSeconds = measuring.Elapsed.TotalSeconds;
                    Console.WriteLine($"  {queue.Name} with a backlog of {Curve.Size(step)} ({clock.Elapsed.TotalSeconds:0} s): send {c[0].Points[step]:N0} msg/s, claim+ack {c[1].Points[step]:N0} msg/s; bulk send {queue.LoadRate:N0} msg/s");
                }
            }
        }
        finally
        {
            foreach (var queue in queues)
            {
                await queue.DisposeAsync();
            }
        }

        return [.. curves.Select(kv => ($"Queue: {kv.Key} (backlog in the queue)", Curve.Table("operation", kv.Value).ToString()))];
    }

    private static async Task<List<(string Title, string Body)>> RunTablesAsync(
        BenchmarkArgs args, string postgres, NpgsqlDataSource admin, List<long> steps, TimeSpan deadline, Stopwatch clock, List<string> notes, CancellationToken cancellationToken)
    {
        // --only picks rows here by "<engine> outbox" and "<engine> dead letters" ("dead", "SQLite dead", "PostgreSQL outbox",
        // ...): a set runs when one of its two is picked, and its fill still grows both tables to every step, so a row picked
        // alone is measured on the same tables (and the same file) as in a full run.
        var picked = new[] { "PostgreSQL", "SQLite" }.ToDictionary(
            e => e, e => (Outbox: args.Includes($"{e} outbox"), DeadLetters: args.Includes($"{e} dead letters")));
        if (!picked.Values.Any(p => p.Outbox || p.DeadLetters))
        {
            return [];
        }

        var schema = $"herald_scalet_{Guid.NewGuid():N}"[..24];
        var sqlitePath = Path.Combine(Path.GetTempPath(), $"herald-scalet-{Guid.NewGuid():N}.db");
        var sets = new List<ScaleTables>
        {
            new("PostgreSQL", h => h.UsePostgres(postgres, o => o.Schema = schema), (from, add, ct) => ScaleTables.FillPostgresAsync(admin, schema, from, add, ct),
                () => HeraldEventStoreContender.DropSchemaAsync(postgres, schema)),
            new("SQLite", h => h.UseSqlite(sqlitePath), (from, add, ct) => ScaleTables.FillSqliteAsync(sqlitePath, from, add, ct),
                () => HeraldEventStoreContender.DeleteSqliteFiles(sqlitePath)),
        };
        sets.RemoveAll(t => picked[t.Name] is { Outbox: false, DeadLetters: false });
        var curves = sets.ToDictionary(t => t.Name, _ => new List<Curve>
        {
            new($"outbox relay: fetch 100 due + mark sent, {RelayMessages:N0} messages", "msg/s", true),
            new($"dead letters: list one endpoint, 20 keyset pages of 100 from the middle half (median of {ScaleTables.ListSamples})", "rows/s", true),
            new($"dead letters: count one endpoint (a tenth of the table; median of {ScaleTables.CountSamples})", "ms", false),
        });
        var measureSeconds = sets.ToDictionary(t => t.Name, _ => 5.0);
        var running = new List<ScaleTables>();
        try
        {
            foreach (var tables in sets)
            {
                try
                {
                    await tables.StartAsync(cancellationToken);
                    await tables.GrowAsync(Math.Min(10_000, steps[0] / 2), cancellationToken);
                    await tables.MeasureRelayAsync(200, cancellationToken);
                    await tables.MeasureListAsync(cancellationToken);
                    await tables.MeasureCountAsync(cancellationToken);
                    running.Add(tables);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    notes.Add($"{tables.Name} outbox and dead letters failed: {ex.Message}");
                }
            }

            foreach (var step in steps)
            {
                var predicted = running.Sum(t => 1.2 * (((step - t.Rows) / t.LoadRate) + measureSeconds[t.Name]));
                if (running.Count == 0 || clock.Elapsed + TimeSpan.FromSeconds(predicted) > deadline)
                {
                    notes.Add($"Outbox and dead letters stopped before {Curve.Size(step)} rows: about {predicted:0} s predicted, {(deadline - clock.Elapsed).TotalSeconds:0} s left.");
                    break;
                }

                foreach (var tables in running.ToList())
                {
                    try
                    {
                        await tables.GrowAsync(step, cancellationToken);
                        var measuring = Stopwatch.StartNew();
                        var c = curves[tables.Name];
                        if (picked[tables.Name].Outbox)
                        {
                            c[0].Points[step] = await tables.MeasureRelayAsync(RelayMessages, cancellationToken);
                        }

                        if (picked[tables.Name].DeadLetters)
                        {
                            c[1].Points[step] = await tables.MeasureListAsync(cancellationToken);
                            c[2].Points[step] = await tables.MeasureCountAsync(cancellationToken);
                        }

                        measureSeconds[tables.Name] = measuring.Elapsed.TotalSeconds;
                        Console.WriteLine($"  {tables.Name} outbox/dead letters at {Curve.Size(step)} rows each ({clock.Elapsed.TotalSeconds:0} s): " +
                            string.Join("; ", c.Where(x => x.Points.ContainsKey(step)).Select(x => $"{x.Name} {x.Points[step]:N1} {x.Unit}")));
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException)
                    {
                        notes.Add($"{tables.Name} outbox and dead letters failed at {Curve.Size(step)} rows: {ex.Message}");
                        running.Remove(tables);
                    }
                }
            }
        }
        finally
        {
            foreach (var tables in sets)
            {
                await tables.DisposeAsync();
            }
        }

        return [.. sets.Select(t => ($"{t.Name} outbox and dead letters (rows in each table)", Curve.Table("operation", [.. curves[t.Name].Where(c => c.Points.Count > 0)]).ToString()))];
    }

    private static async Task<string> DescribeServerAsync(NpgsqlDataSource admin, CancellationToken cancellationToken)
    {
        await using var command = admin.CreateCommand(
            "SELECT current_setting('server_version') || ', shared_buffers ' || current_setting('shared_buffers') || ', max_wal_size ' || current_setting('max_wal_size') || " +
            "', checkpoint_timeout ' || current_setting('checkpoint_timeout') || ', synchronous_commit ' || current_setting('synchronous_commit')");
        return (string)(await command.ExecuteScalarAsync(cancellationToken))!;
    }

    private static long FileSize(string path) => File.Exists(path) ? new FileInfo(path).Length : 0;

    private static string Mb(long bytes) => (bytes / 1048576.0).ToString("N0", CultureInfo.InvariantCulture);
}
