using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Herald.Conformance;
using Herald.Processes;
using Microsoft.Data.Sqlite;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Herald.Sqlite.Tests.Faults;

/// <summary>
/// A seeded model of processes sharing one SQLite file through random SIGKILLs (docs/sqlite.md: several processes on one
/// file, leader election by lock files). Two slots each run a Herald.CrashChild (kill-model-sqlite, KillModelScenario):
/// appends, units of work with outbox rows, sends to the file's queue, the leader-elected relay and projection, and the
/// queue's handlers that succeed, hold past their lease or fail. The test kills each child at a random moment and starts
/// another; children also kill themselves inside a commit and between a relay's send and its mark. Then one last process
/// runs until everything is settled, and: every append or commit that returned is in $all once; one that did not is all
/// there or all absent with its outbox rows; $all is 1..n and each stream's versions 1..n; each committed row was relayed
/// and marked sent; each message sent is handled, or dead-lettered after its handler failed; nothing stays leased (the
/// next process takes the relay, the projection and the messages over); the read model is the fold of the log up to the
/// checkpoint, each event once; the file passes PRAGMA integrity_check.
/// </summary>
public sealed class ProcessKillModelTests(ITestOutputHelper output) : IDisposable
{
    private const string ProjectionName = "kill-model-tallies";
    private static readonly TimeSpan Workload = TimeSpan.FromSeconds(8);
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private readonly TempDatabase _database = new();
    private readonly string _endpoint = "kill-model-" + Guid.NewGuid().ToString("N")[..8];
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly ConcurrentQueue<string> _log = new();
    private readonly ConcurrentQueue<(string Verb, string Ids)> _lines = new();
    private string? _lastPoll;

    public void Dispose() => _database.Dispose();

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task ProcessesOnOneFile_ThroughRandomKills_LoseNothing_CommitAllOrNothing_AndResume(int seed)
    {
        try
        {
            var until = _clock.Elapsed + Workload;
            await Task.WhenAll(RunSlotAsync("a", seed, until), RunSlotAsync("b", seed, until));
            Note("workload done; a last process runs to quiescence");
            using (var last = await StartAsync("last", seed * 1000 + 999, workload: false))
            {
                var pump = PumpAsync("last", last);
                await Eventually.UntilAsync(Quiescent, "the last process relays every row, settles every message and projects the log", Deadline);
                await last.KillAsync();
                await pump;
            }

            Check();
        }
        catch (Exception ex) when (ex is not SeededModelException)
        {
            throw new SeededModelException(
                $"seed {seed}: {ex}{Environment.NewLine}operations:{Environment.NewLine}{string.Join(Environment.NewLine, _log)}", ex);
        }
    }

    private async Task RunSlotAsync(string slot, int seed, TimeSpan until)
    {
        var random = new Random(seed * 10 + slot[0]);
        for (var run = 0; _clock.Elapsed < until; run++)
        {
            var name = $"{slot}{run}";
            using var child = await StartAsync(name, seed * 1000 + slot[0] * 10 + run, workload: true);
            var pump = PumpAsync(name, child);
            var life = TimeSpan.FromMilliseconds(random.Next(200, 2500));
            if (await Task.WhenAny(pump, Task.Delay(life)) != pump)
            {
                Note($"{name} killed after {life.TotalMilliseconds:F0} ms");
                await child.KillAsync();
            }

            await pump;
        }
    }

    private async Task<CrashChildProcess> StartAsync(string name, int seed, bool workload)
    {
        var child = await CrashChildProcess.StartAsync(
            "kill-model-sqlite", _database.Path, _endpoint, seed.ToString(CultureInfo.InvariantCulture), workload ? "workload" : "idle");
        Note($"{name} started (seed {seed})");
        return child;
    }

    // Reads the child's lines until its output ends (it was killed or killed itself).
    private async Task PumpAsync(string name, CrashChildProcess child)
    {
        await Task.Yield();
        while (true)
        {
            string line;
            try
            {
                line = await child.ReadLineAsync(TimeSpan.FromMinutes(2));
            }
            catch (InvalidOperationException)
            {
                Note($"{name} ended");
                return;
            }

            Note($"{name} {line}");
            var parts = line.Split(' ', 3);
            _lines.Enqueue((parts[0], parts.Length > 1 ? parts[1] : ""));
        }
    }

    private bool Quiescent()
    {
        using var connection = _database.OpenRaw();
        var pending = Scalar(connection, "SELECT count(*) FROM herald_outbox WHERE sent_at IS NULL");
        var queued = Scalar(connection, $"SELECT count(*) FROM herald_queue_messages WHERE queue = '{_endpoint}'");
        var head = Scalar(connection, "SELECT coalesce(max(position), 0) FROM herald_events");
        var checkpoint = Scalar(connection, $"SELECT coalesce(max(position), 0) FROM herald_checkpoints WHERE subscription_id = '{ProjectionName}'");
        var state = $"{pending} pending rows, {queued} queued messages, checkpoint {checkpoint} of {head}";
        if (state != _lastPoll)
        {
            _lastPoll = state;
            Note("poll: " + state);
        }

        return pending == 0 && queued == 0 && checkpoint >= head;
    }

    private void Check()
    {
        using var connection = _database.OpenRaw();
        Assert.Equal("ok", Scalar<string>(connection, "PRAGMA integrity_check"));

        // $all: positions 1..n, each event once, each stream's versions 1..n.
        var log = new List<(long Position, string Stream, long Version, Guid Id, string Type, byte[] Body)>();
        using (var command = connection.CreateCommand())
        {
            command.CommandText = "SELECT e.position, s.name, e.version, e.event_id, e.event_type, e.body FROM herald_events e JOIN herald_streams s USING (stream_id) ORDER BY e.position";
            using var reader = command.ExecuteReader();
            while (reader.Read())
            {
                log.Add((reader.GetInt64(0), reader.GetString(1), reader.GetInt64(2), Id(reader, 3), reader.GetString(4), (byte[])reader[5]));
            }
        }

        Assert.Equal(Enumerable.Range(1, log.Count).Select(p => (long)p), log.Select(e => e.Position));
        foreach (var stream in log.GroupBy(e => e.Stream))
        {
            Assert.Equal(Enumerable.Range(1, stream.Count()).Select(v => (long)v), stream.Select(e => e.Version));
        }

        var counts = log.GroupBy(e => e.Id).ToDictionary(g => g.Key, g => g.Count());
        Assert.True(counts.Values.All(c => c == 1), "an event is in $all twice");
        var outbox = Ids(connection, "SELECT id FROM herald_outbox").ToHashSet();
        Assert.Empty(Ids(connection, "SELECT id FROM herald_outbox WHERE sent_at IS NULL"));

        // Appends and units of work: one that returned is there; one that did not, all or nothing with its rows.
        var lines = _lines.ToList();
        var done = lines.Where(l => l.Verb is "append-done" or "uow-done").Select(l => l.Ids).ToHashSet();
        var committedRows = new List<Guid>();
        foreach (var (verb, ids) in lines.Where(l => l.Verb is "append-begin" or "uow-begin"))
        {
            var halves = ids.Split('|');
            var events = halves[0].Split(',').Select(Guid.Parse).ToArray();
            var rows = halves.Length > 1 ? halves[1].Split(',').Select(Guid.Parse).ToArray() : [];
            var present = events.Count(counts.ContainsKey);
            var rowsPresent = rows.Count(outbox.Contains);
            if (done.Contains(ids))
            {
                Assert.True(present == events.Length, $"{verb} {ids} returned and has {present} of its {events.Length} events in $all");
            }

            Assert.True(present == 0 || present == events.Length, $"{verb} {ids} has {present} of its {events.Length} events in $all");
            Assert.True(rowsPresent == (present == 0 ? 0 : rows.Length), $"{verb} {ids} has {present}/{events.Length} events and {rowsPresent}/{rows.Length} outbox rows");
            if (present > 0)
            {
                committedRows.AddRange(rows);
            }
        }

        // Each committed row was relayed; each message relayed or sent is handled, or dead-lettered after its handler threw.
        var relayed = lines.Where(l => l.Verb == "relayed").Select(l => Guid.Parse(l.Ids)).ToHashSet();
        var handled = lines.Where(l => l.Verb == "handled").Select(l => Guid.Parse(l.Ids)).ToHashSet();
        var threw = lines.Where(l => l.Verb == "threw").Select(l => Guid.Parse(l.Ids)).ToHashSet();
        foreach (var row in committedRows)
        {
            Assert.True(relayed.Contains(row), $"committed outbox row {row} was marked sent but never relayed");
        }

        var deadLetters = Ids(connection, "SELECT message_id FROM herald_dead_letters")
            .Concat(Ids(connection, $"SELECT message_id FROM herald_queue_dead_letters WHERE queue = '{_endpoint}'")).ToHashSet();
        var sent = lines.Where(l => l.Verb == "send-done").Select(l => Guid.Parse(l.Ids));
        foreach (var id in committedRows.Concat(sent))
        {
            Assert.True(handled.Contains(id) || deadLetters.Contains(id), $"message {id} was neither handled nor dead-lettered");
        }

        foreach (var id in deadLetters)
        {
            Assert.True(threw.Contains(id), $"message {id} was dead-lettered without its handler failing");
        }

        // The read model is the fold of the log up to the checkpoint, each event applied once.
        var checkpoint = Scalar(connection, $"SELECT position FROM herald_checkpoints WHERE subscription_id = '{ProjectionName}'");
        var added = log.Where(e => e.Position <= checkpoint && e.Type == "kill-model-added")
            .Select(e => (e.Position, Amount: JsonSerializer.Deserialize<Added>(e.Body, Json)!)).ToList();
        foreach (var key in added.Select(e => e.Amount.Key).Distinct())
        {
            var data = Scalar<string>(connection, $"SELECT data FROM herald_rm_kill_model_tallies_g1 WHERE id = '{key}'");
            var tally = JsonSerializer.Deserialize<Tally>(data, Json)!;
            var events = added.Where(e => e.Amount.Key == key).ToList();
            Assert.True(events.Select(e => e.Position).SequenceEqual(tally.Positions) && events.Sum(e => (long)e.Amount.Amount) == tally.Sum,
                $"read model {key} applied [{string.Join(",", tally.Positions)}] (sum {tally.Sum}), the log up to checkpoint {checkpoint} " +
                $"has [{string.Join(",", events.Select(e => e.Position))}] (sum {events.Sum(e => (long)e.Amount.Amount)})");
        }

        Note($"checked: {log.Count} events, {committedRows.Count} committed rows, {relayed.Count} relayed, {handled.Count} handled, " +
            $"{deadLetters.Count} dead letters, {lines.Count(l => l.Verb == "killing")} self-kills");
        output.WriteLine(string.Join(Environment.NewLine, _log));
    }

    private static long Scalar(SqliteConnection connection, string sql) => Scalar<long>(connection, sql);

    private static T Scalar<T>(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return (T)command.ExecuteScalar()!;
    }

    private static List<Guid> Ids(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        using var reader = command.ExecuteReader();
        var ids = new List<Guid>();
        while (reader.Read())
        {
            ids.Add(Id(reader, 0));
        }

        return ids;
    }

    // Herald.Sqlite stores ids big-endian, so they sort by time.
    private static Guid Id(SqliteDataReader reader, int column) => new((byte[])reader[column], bigEndian: true);

    private void Note(string line) => _log.Enqueue($"{_clock.Elapsed.TotalMilliseconds,7:F0} {line}");

    private sealed record Added(string Key, int Amount);

    private sealed record Tally(string Key, long Sum, long[] Positions);

    private sealed class SeededModelException(string message, Exception inner) : XunitException(message, inner);
}
