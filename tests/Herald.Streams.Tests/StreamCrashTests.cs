using System.Globalization;
using Herald.CrashChild;
using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Messages;
using Herald.Processes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Npgsql;
using Xunit.Abstractions;

namespace Herald.Streams.Tests;

/// <summary>
/// Issue 15: "a crash (SIGKILL of a child process) in the middle of a windowed aggregation over $all on SQLite and
/// PostgreSQL: the resumed result equals the uninterrupted one". The child (Herald.CrashChild stream-sqlite) runs
/// <see cref="StreamCrashScenario"/> over seeded orders and is killed three times while it processes; a last run catches up.
/// </summary>
[Collection("stream-crash")]
public sealed class SqliteStreamCrashTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _crashed = TestSqlite.NewFile("crash");
    private readonly string _uninterrupted = TestSqlite.NewFile("clean");

    [Fact]
    public async Task Sqlite_KilledThreeTimesMidAggregation_ResumedResultEqualsTheUninterruptedOne_AndEachWindowIsAppendedOnce() =>
        await StreamCrashRun.RunAsync(
            h => h.UseSqlite(_crashed).UseSqliteStreamState(),
            h => h.UseSqlite(_uninterrupted).UseSqliteStreamState(),
            target => ["stream-sqlite", _crashed, target, StreamCrashRun.PaceMilliseconds],
            output);

    public void Dispose()
    {
        TestSqlite.Delete(_crashed);
        TestSqlite.Delete(_uninterrupted);
    }
}

/// <summary>The same on PostgreSQL: the crashed run and the uninterrupted one each in a fresh schema (one after the other with SQLite: each runs child processes).</summary>
[Collection("stream-crash")]
public sealed class PostgresStreamCrashTests(ITestOutputHelper output) : IAsyncLifetime
{
    private static readonly string ConnectionString =
        Environment.GetEnvironmentVariable("HERALD_TEST_POSTGRES") is { Length: > 0 } configured
            ? configured
            : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";

    private readonly string _crashed = "herald_streams_crash_" + Guid.NewGuid().ToString("N")[..12];
    private readonly string _uninterrupted = "herald_streams_clean_" + Guid.NewGuid().ToString("N")[..12];

    [Fact]
    public async Task Postgres_KilledThreeTimesMidAggregation_ResumedResultEqualsTheUninterruptedOne_AndEachWindowIsAppendedOnce() =>
        await StreamCrashRun.RunAsync(
            h => h.UsePostgres(ConnectionString, o => o.Schema = _crashed).UsePostgresStreamState(),
            h => h.UsePostgres(ConnectionString, o => o.Schema = _uninterrupted).UsePostgresStreamState(),
            target => ["stream-postgres", ConnectionString, _crashed, target, StreamCrashRun.PaceMilliseconds],
            output);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        foreach (var schema in new[] { _crashed, _uninterrupted })
        {
            await using var command = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", connection);
            await command.ExecuteNonQueryAsync();
        }
    }
}

/// <summary>
/// The variant that re-keys the closed windows' counts after state and counts them again, in four partitions: the second
/// stage reads the repartition log the first writes in the same database, and a SIGKILL anywhere loses and doubles nothing.
/// </summary>
[Collection("stream-crash")]
public sealed class SqliteRepartitionCrashTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _crashed = TestSqlite.NewFile("rekey-crash");
    private readonly string _uninterrupted = TestSqlite.NewFile("rekey-clean");

    [Fact]
    public async Task Sqlite_KilledThreeTimesMidRun_WithARekeyAfterStateInFourPartitions_ResumedStateEqualsTheUninterruptedOne() =>
        await StreamCrashRun.RunAsync(
            h => h.UseSqlite(_crashed).UseSqliteStreamState(),
            h => h.UseSqlite(_uninterrupted).UseSqliteStreamState(),
            target => ["stream-rekey-sqlite", _crashed, target, StreamCrashRun.PaceMilliseconds],
            output,
            rekey: true);

    public void Dispose()
    {
        TestSqlite.Delete(_crashed);
        TestSqlite.Delete(_uninterrupted);
    }
}

/// <summary>The re-keyed variant on PostgreSQL.</summary>
[Collection("stream-crash")]
public sealed class PostgresRepartitionCrashTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly string _crashed = TestPostgres.NewSchema();
    private readonly string _uninterrupted = TestPostgres.NewSchema();

    [Fact]
    public async Task Postgres_KilledThreeTimesMidRun_WithARekeyAfterStateInFourPartitions_ResumedStateEqualsTheUninterruptedOne() =>
        await StreamCrashRun.RunAsync(
            h => h.UsePostgres(TestPostgres.ConnectionString, o => o.Schema = _crashed).UsePostgresStreamState(),
            h => h.UsePostgres(TestPostgres.ConnectionString, o => o.Schema = _uninterrupted).UsePostgresStreamState(),
            target => ["stream-rekey-postgres", TestPostgres.ConnectionString, _crashed, target, StreamCrashRun.PaceMilliseconds],
            output,
            rekey: true);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await TestPostgres.DropAsync(_crashed);
        await TestPostgres.DropAsync(_uninterrupted);
    }
}

internal static class StreamCrashRun
{
    /// <summary>The child's delay per event: more than 2 s for the 2,000 events, so every kill lands mid-run.</summary>
    public const string PaceMilliseconds = "1";

    private const int Kills = 3;
    private static readonly TimeSpan LineTimeout = TimeSpan.FromSeconds(30);

    public static async Task RunAsync(
        Action<HeraldBuilder> crashed, Action<HeraldBuilder> uninterrupted, Func<string, string[]> childArguments, ITestOutputHelper output, bool rekey = false)
    {
        var options = rekey ? StreamCrashScenario.RekeyOptions : StreamCrashScenario.Options;

        // Four partitions and a second stage commit about eight times as often as one task (25 s on a busy PostgreSQL).
        var runTimeout = TimeSpan.FromSeconds(rekey ? 180 : 60);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var orders = StreamCrashScenario.Orders();
        var target = await AppendAsync(crashed, orders);
        output.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s: appended");

        // The uninterrupted run, in this process, on a database of its own with the same events.
        using var clean = await StartAsync(uninterrupted);
        var cleanTarget = await AppendAsync(clean, orders);
        await using (var processor = new StreamProcessor(StreamCrashScenario.Name, StreamCrashScenario.Topology(rekey: rekey), clean.Services, options))
        {
            await processor.StartAsync();
            await processor.WaitForPositionAsync(cleanTarget).WaitAsync(runTimeout);
        }

        output.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s: the uninterrupted run is done");

        // Killed mid-run three times, after a random number of its progress lines; then a last run catches up.
        var arguments = childArguments(target.ToString(CultureInfo.InvariantCulture));
        long reached = 0;
        for (var kill = 0; kill <= Kills; kill++)
        {
            using var child = await CrashChildProcess.StartAsync(arguments);
            var resumed = Position(child.Lines.Single(l => l.StartsWith("resumed ", StringComparison.Ordinal)));
            Assert.True(resumed >= reached && resumed < target, $"run {kill} resumed from {resumed}: after the {reached} the last run committed, before the end {target}");
            Assert.True(kill == 0 || resumed > 0, $"run {kill} resumed from the start: nothing was committed before the kill");
            if (kill == Kills)
            {
                while (!(await child.ReadLineAsync(LineTimeout)).StartsWith("caught-up ", StringComparison.Ordinal))
                {
                }

                output.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s: last run resumed from {resumed}, caught up with {target}");
                await child.KillAsync();
                break;
            }

            // 100 commits in all: three kills after at most 15 each leave the last run more than half of the work.
            var lines = Random.Shared.Next(1, 16);
            for (var seen = 0; seen < lines;)
            {
                var line = await child.ReadLineAsync(LineTimeout);
                Assert.False(line.StartsWith("caught-up ", StringComparison.Ordinal), $"run {kill} caught up before its kill: the pace is too fast to kill it mid-run");
                if (line.StartsWith("progress ", StringComparison.Ordinal))
                {
                    reached = Position(line);
                    seen++;
                }
            }

            Assert.NotEqual(0, await child.KillAsync());
            var rest = await child.ReadRestAsync();
            Assert.DoesNotContain(rest, l => l.StartsWith("caught-up ", StringComparison.Ordinal));
            reached = rest.Where(l => l.StartsWith("progress ", StringComparison.Ordinal)).Select(Position).DefaultIfEmpty(reached).Max();
            output.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s: run {kill} resumed from {resumed}, killed after {lines} progress lines at {reached} of {target}");
        }

        using var resumedHost = await StartAsync(crashed);
        var checkpoints = resumedHost.Services.GetRequiredService<ICheckpointStore>();
        foreach (var checkpoint in StateNames(rekey).Select(n => "stream:" + n))
        {
            Assert.True(await checkpoints.GetCheckpointAsync(checkpoint) >= target, $"the last run committed everything ({checkpoint})");
        }

        // The whole committed state (every window of both aggregates, closed flags, the stream time) equals the
        // uninterrupted run's, entry by entry; read before any processor runs here.
        Assert.Equal(await StateAsync(clean, rekey), await StateAsync(resumedHost, rekey));
        if (rekey)
        {
            // Each update of the re-keyed count was appended once: per parity 1, 2, 3, ... as in the uninterrupted run,
            // and together one per closed window.
            var parities = new List<CrashParityCount>();
            foreach (var parity in new[] { "even", "odd" })
            {
                var updates = await ProcessorScenario.ReadAsync<CrashParityCount>(resumedHost, StreamCrashScenario.ParityStream(parity));
                Assert.Equal(Enumerable.Range(1, updates.Count).Select(n => (long)n), updates.Select(u => u.Windows));
                Assert.Equal(await ProcessorScenario.ReadAsync<CrashParityCount>(clean, StreamCrashScenario.ParityStream(parity)), updates);
                parities.AddRange(updates);
            }

            Assert.Equal(Expected(orders).Closed.Count, parities.Count);
        }

        // Each closed window was appended exactly once, with the count of the events that were on time for it; every late
        // event went to the side output exactly once.
        var expected = Expected(orders);
        var appended = await WindowCountsAsync(resumedHost);
        Assert.Equal(appended.Count, appended.Select(a => (a.ProductId, a.WindowStart)).Distinct().Count());
        Assert.Equal(expected.Closed, appended.OrderBy(a => a.ProductId, StringComparer.Ordinal).ThenBy(a => a.WindowStart).ToList());
        Assert.Equal(await WindowCountsAsync(clean), appended);
        // With several partitions each appends its own late events in its own commits, so their order across partitions
        // follows the commits' timing (in the uninterrupted run too): compared as sets of ids there, each id once.
        var late = await ProcessorScenario.ReadAsync<CrashLateOrder>(resumedHost, StreamCrashScenario.LateStream);
        var cleanLate = await ProcessorScenario.ReadAsync<CrashLateOrder>(clean, StreamCrashScenario.LateStream);
        if (rekey)
        {
            Assert.Equal(orders.Where(o => o.Late).Select(o => o.Order.OrderId).Order(StringComparer.Ordinal), late.Select(o => o.OrderId).Order(StringComparer.Ordinal));
            Assert.Equal(cleanLate.OrderBy(o => o.OrderId, StringComparer.Ordinal), late.OrderBy(o => o.OrderId, StringComparer.Ordinal));
        }
        else
        {
            Assert.Equal(orders.Where(o => o.Late).Select(o => o.Order.OrderId), late.Select(o => o.OrderId));
            Assert.Equal(cleanLate, late);
        }

        // The state as the interactive queries see it equals the result computed in memory.
        await using var queries = new StreamProcessor(StreamCrashScenario.Name, StreamCrashScenario.Topology(rekey: rekey), resumedHost.Services, options);
        await queries.StartAsync();
        await queries.WaitForPositionAsync(target).WaitAsync(TimeSpan.FromSeconds(30));
        foreach (var product in expected.Windows.Keys.Select(k => k.Product).Distinct())
        {
            var windows = expected.Windows.Where(w => w.Key.Product == product).OrderBy(w => w.Key.Start).ToList();
            var revenue = await queries.QueryWindowsAsync<string, decimal>(StreamCrashScenario.RevenueStore, product, DateTimeOffset.MinValue, DateTimeOffset.MaxValue);
            Assert.Equal(windows.Select(w => (w.Key.Start, w.Value.Sum)), revenue.Select(r => (r.Key.Window.Start, r.Value)));
            var counts = await queries.QueryWindowsAsync<string, long>(StreamCrashScenario.CountStore, product, DateTimeOffset.MinValue, DateTimeOffset.MaxValue);
            Assert.Equal(windows.Select(w => (w.Key.Start, w.Value.Count)), counts.Select(c => (c.Key.Window.Start, c.Value)));
        }

        await queries.StopAsync();
        output.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s: checked");
        await resumedHost.StopAsync();
        await clean.StopAsync();
    }

    private static long Position(string line) => long.Parse(line[(line.IndexOf(' ', StringComparison.Ordinal) + 1)..], CultureInfo.InvariantCulture);

    private static Task<IHost> StartAsync(Action<HeraldBuilder> persistence) =>
        ProcessorScenario.StartHostAsync(h =>
        {
            persistence(h);
            StreamCrashScenario.AddMessageTypes(h);
        });

    // Appends in a host of its own, stopped before the child opens the database.
    private static async Task<long> AppendAsync(Action<HeraldBuilder> persistence, IReadOnlyList<(CrashOrder Order, bool Late)> orders)
    {
        using var host = await StartAsync(persistence);
        var target = await AppendAsync(host, orders);
        await host.StopAsync();
        return target;
    }

    private static async Task<long> AppendAsync(IHost host, IReadOnlyList<(CrashOrder Order, bool Late)> orders)
    {
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();

        // The last order's own position, not GetLastPositionAsync: on PostgreSQL an older transaction elsewhere on the
        // server (another test's) holds the readable head back, and that returns what is readable after 10 s.
        var last = 0L;
        foreach (var chunk in orders.Chunk(StreamCrashScenario.OrdersPerStream))
        {
            last = Math.Max(last, (await events.AppendAsync("crashorder-" + chunk[0].Order.OrderId, ExpectedVersion.NoStream, [.. chunk.Select(o => envelopes.Create(o.Order))])).LastPosition);
        }

        return last;
    }

    /// <summary>The names the state (and, after "stream:", the checkpoints) are kept under: one, or per partition and stage.</summary>
    private static IEnumerable<string> StateNames(bool rekey) => rekey
        ? Enumerable.Range(0, StreamCrashScenario.RekeyOptions.Partitions).SelectMany(p => new[] { $"{StreamCrashScenario.Name}:{p}", $"{StreamCrashScenario.Name}:{p}:stage-1" })
        : [StreamCrashScenario.Name];

    private static async Task<List<(string Name, StateEntry Entry)>> StateAsync(IHost host, bool rekey)
    {
        var entries = new List<(string, StateEntry)>();
        foreach (var name in StateNames(rekey))
        {
            await foreach (var entry in host.Services.GetRequiredService<IStreamStateStore>().ReadAllAsync(name))
            {
                entries.Add((name, entry));
            }
        }

        Assert.NotEmpty(entries);
        return [.. entries.OrderBy(e => e.Item1, StringComparer.Ordinal).ThenBy(e => e.Item2.Store, StringComparer.Ordinal).ThenBy(e => e.Item2.Key, StringComparer.Ordinal)];
    }

    private static async Task<List<CrashWindowCount>> WindowCountsAsync(IHost host)
    {
        var all = new List<CrashWindowCount>();
        foreach (var product in Enumerable.Range(0, 5).Select(p => "p" + p.ToString(CultureInfo.InvariantCulture)))
        {
            all.AddRange(await ProcessorScenario.ReadAsync<CrashWindowCount>(host, StreamCrashScenario.WindowStream(product)));
        }

        return all;
    }

    /// <summary>
    /// The result computed in memory: the sum and count of the on-time orders per product and window, and the windows the
    /// last watermark (largest event time − out-of-orderness) has closed (end + grace at or below it), which are emitted.
    /// </summary>
    private static (Dictionary<(string Product, DateTimeOffset Start), (decimal Sum, long Count)> Windows, List<CrashWindowCount> Closed) Expected(
        IReadOnlyList<(CrashOrder Order, bool Late)> orders)
    {
        var size = StreamCrashScenario.WindowSize.Ticks;
        var windows = orders.Where(o => !o.Late)
            .GroupBy(o => (o.Order.ProductId, Start: new DateTimeOffset(o.Order.PlacedAt.UtcTicks - (o.Order.PlacedAt.UtcTicks % size), TimeSpan.Zero)))
            .ToDictionary(g => g.Key, g => (g.Sum(o => o.Order.Amount), g.LongCount()));
        var watermark = orders.Max(o => o.Order.PlacedAt) - StreamCrashScenario.OutOfOrderness;
        var closed = windows.Where(w => w.Key.Start + StreamCrashScenario.WindowSize + StreamCrashScenario.Grace <= watermark)
            .Select(w => new CrashWindowCount(w.Key.ProductId, w.Key.Start, w.Value.Item2))
            .OrderBy(w => w.ProductId, StringComparer.Ordinal).ThenBy(w => w.WindowStart)
            .ToList();
        Assert.True(closed.Count > 250, $"the scenario closes most of its windows ({closed.Count})");
        return (windows, closed);
    }
}
