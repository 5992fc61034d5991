using System.Collections.Concurrent;
using System.Diagnostics;
using Herald.Conformance;
using Herald.Conformance.Transport;
using Herald.EventSourcing;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Persistence;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Persistence;
using Herald.Postgres.Transport;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Outbox;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Herald.Postgres.Tests.Faults;

/// <summary>
/// A seeded model of two hosts on one schema through random backend kills: appends (direct, and in units of work with
/// outbox rows), the leader-elected outbox relay sending to the PostgreSQL queue, handlers there that succeed, hold past
/// their lease, fail once or always, and a leader-elected async projection, while pg_terminate_backend cuts, by
/// application name, all of a host's backends, only a leader's lock connection, only its idle pooled ones or only its
/// LISTEN connection. Then, with no restart: every append that returned is in $all once, in order; one that threw is all
/// there or all absent with its outbox rows; every committed row was sent and its message handled (or dead-lettered
/// after its handler failed); each host relayed and projected only while it held the lease; the read model is the fold of
/// the log up to the checkpoint, each event applied once; nothing stays leased.
/// </summary>
public sealed class BackendKillModelTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const string ProjectionName = "kill-model-tallies";
    private static readonly ReadModelTable<Tally> Table = new("kill_model_tallies");
    private static readonly TimeSpan Workload = TimeSpan.FromSeconds(8);
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private static readonly string[] Keys = ["k0", "k1", "k2", "k3", "k4"];

    private readonly string _schema = PostgresTestDatabase.NewSchema();
    private readonly string _endpoint = "kill-model-" + Guid.NewGuid().ToString("N")[..8];
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly ConcurrentQueue<string> _log = new();
    private readonly ConcurrentQueue<Interval> _leases = new();
    private readonly ConcurrentQueue<(string Node, string Resource, TimeSpan At, Guid Id)> _work = new();
    private readonly ConcurrentDictionary<Guid, ConcurrentQueue<string>> _attempts = new();
    private readonly List<Node> _nodes = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var node in _nodes)
        {
            await node.DisposeAsync();
        }

        await PostgresTestDatabase.DropSchemaAsync(_schema);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public async Task TwoHosts_ThroughRandomBackendKills_LoseNothing_ApplyOnce_LeadAlone_AndResume(int seed)
    {
        var random = new Random(seed);
        var appended = new List<(Guid[] Ids, Guid[] Rows, bool Threw)>();
        var sent = new List<(Guid Id, bool Threw)>();
        try
        {
            _nodes.Add(await StartNodeAsync("a"));
            _nodes.Add(await StartNodeAsync("b"));
            var until = _clock.Elapsed + Workload;
            var step = 0;
            while (_clock.Elapsed < until)
            {
                var node = _nodes[random.Next(_nodes.Count)];
                var op = random.Next(10);
                step++;
                if (op < 3)
                {
                    var key = Keys[random.Next(Keys.Length)];
                    var events = Enumerable.Range(0, random.Next(1, 4)).Select(_ => node.Event(key, random.Next(1, 100))).ToArray();
                    var threw = await TryAsync(() => node.Events.AppendAsync("kmodel-" + key, ExpectedVersion.Any, events).AsTask());
                    appended.Add(([.. events.Select(e => e.MessageId)], [], threw is not null));
                    Note($"{step} {node.Name} append {key} x{events.Length}{Failed(threw)}");
                }
                else if (op < 6)
                {
                    var key = Keys[random.Next(Keys.Length)];
                    var events = Enumerable.Range(0, random.Next(1, 3)).Select(_ => node.Event(key, random.Next(1, 100))).ToArray();
                    var rows = Enumerable.Range(0, random.Next(1, 3)).Select(_ => Row(node.Work(Behaviour(random)))).ToArray();
                    var threw = await TryAsync(async () =>
                    {
                        await using var unitOfWork = node.Store.BeginUnitOfWork();
                        await node.Store.AppendAsync("kmodel-" + key, ExpectedVersion.Any, events, unitOfWork);
                        await node.Outbox.AddAsync(rows, unitOfWork);
                        await unitOfWork.CommitAsync();
                    });
                    appended.Add(([.. events.Select(e => e.MessageId)], [.. rows.Select(r => r.Id)], threw is not null));
                    Note($"{step} {node.Name} unit of work {key} x{events.Length} rows {string.Join(",", rows.Select(r => Describe(r.Envelope)))}{Failed(threw)}");
                }
                else if (op < 8)
                {
                    var envelope = node.Work(Behaviour(random));
                    var threw = await TryAsync(() => node.Queue.SendAsync(_endpoint, envelope).AsTask());
                    sent.Add((envelope.MessageId, threw is not null));
                    Note($"{step} {node.Name} send {Describe(envelope)}{Failed(threw)}");
                }
                else
                {
                    var (kind, killed) = await KillAsync(node, random.Next(4));
                    Note($"{step} {node.Name} kill {kind}: {killed} backends");
                }

                // Pacing of the workload, not a wait for anything.
                await Task.Delay(random.Next(0, 60));
            }

            Note("workload done; converging");
            await ConvergeAndCheckAsync(appended, sent);
        }
        catch (Exception ex) when (ex is not SeededModelException)
        {
            throw new SeededModelException(Describe(seed, ex.ToString()), ex);
        }
    }

    private async Task ConvergeAndCheckAsync(List<(Guid[] Ids, Guid[] Rows, bool Threw)> appended, List<(Guid Id, bool Threw)> sent)
    {
        // Everything resumes without a restart: a last append and row after the kills go through too.
        var last = _nodes[0];
        var finalEvent = last.Event("k0", 1);
        var finalRow = Row(last.Work("ok"));
        await Eventually.UntilAsync(async () => await TryAsync(async () =>
        {
            await using var unitOfWork = last.Store.BeginUnitOfWork();
            await last.Store.AppendAsync("kmodel-k0", ExpectedVersion.Any, [finalEvent], unitOfWork);
            await last.Outbox.AddAsync([finalRow], unitOfWork);
            await unitOfWork.CommitAsync();
        }) is null, "a last unit of work commits after the kills", Deadline);
        appended.Add(([finalEvent.MessageId], [finalRow.Id], false));

        var log = await TestEvents.ReadAllAsync(last.Events, 0);
        var head = log[^1].Position;
        await Eventually.UntilAsync(
            async () => await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{_schema}\".outbox WHERE sent_at IS NULL") == 0,
            "every outbox row is sent", Deadline);
        try
        {
            await Eventually.UntilAsync(
                async () => await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{_schema}\".queue_messages WHERE queue = '{_endpoint}'") == 0,
                "every queue message is settled (no lease held for ever)", Deadline);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"{ex.Message}; left: {await QueueRowsAsync()}", ex);
        }
        await Eventually.UntilAsync(
            async () => await last.Host.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync(ProjectionName) >= head,
            "the projection catches up with the log", Deadline);

        // $all: each returned append once, in order; each stream's versions gap-free; one that threw all or nothing.
        Assert.Equal(log.Select(e => e.Position).Order(), log.Select(e => e.Position));
        Assert.Equal(log.Count, log.Select(e => e.Position).Distinct().Count());
        foreach (var stream in log.GroupBy(e => e.Stream))
        {
            Assert.Equal(Enumerable.Range(1, stream.Count()).Select(v => (long)v), stream.Select(e => e.Version));
        }

        var counts = log.GroupBy(e => e.EventId).ToDictionary(g => g.Key, g => g.Count());
        Assert.True(counts.Values.All(c => c == 1), "an event is in $all twice");
        var outboxIds = (await IdsAsync("outbox")).ToHashSet();
        var committedRows = new List<Guid>();
        foreach (var (ids, rows, threw) in appended)
        {
            var present = ids.Count(counts.ContainsKey);
            var rowsPresent = rows.Count(outboxIds.Contains);
            if (!threw)
            {
                Assert.True(present == ids.Length, $"an append that returned has {present} of its {ids.Length} events in $all");
            }

            Assert.True(present == 0 || present == ids.Length, $"an append that threw has {present} of its {ids.Length} events in $all");
            Assert.True(rowsPresent == (present == 0 ? 0 : rows.Length), $"a unit of work with {present}/{ids.Length} events has {rowsPresent}/{rows.Length} outbox rows");
            if (present > 0)
            {
                committedRows.AddRange(rows);
            }
        }

        // Each committed row's message and each sent message is handled, or dead-lettered after its handler failed.
        var deadLetters = (await last.Host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = _endpoint }))
            .Select(d => d.Envelope.MessageId).ToHashSet();
        var expected = committedRows.Concat(sent.Where(s => !s.Threw).Select(s => s.Id)).ToList();
        await Eventually.UntilAsync(() => expected.All(id => Handled(id) || deadLetters.Contains(id)), "every message is handled or dead-lettered", Deadline);
        foreach (var id in expected.Where(deadLetters.Contains))
        {
            Assert.True(_attempts.TryGetValue(id, out var attempts) && attempts.Any(a => a.StartsWith("threw", StringComparison.Ordinal)),
                $"{id} was dead-lettered without its handler failing");
        }

        // Each host relayed only while it believed it led. A projection's batch in flight may apply its next events in a
        // unit of work that the checkpoint then refuses (docs/projections.md): it must stop within a second of the loss.
        foreach (var (node, resource, at, id) in _work)
        {
            var grace = resource == "outbox-relay" ? TimeSpan.Zero : TimeSpan.FromSeconds(1);
            Assert.True(
                _leases.Any(l => l.Node == node && l.Resource == resource && l.From <= at && (l.To is null || l.To + grace >= at)),
                $"{node} worked on {resource} at {at.TotalMilliseconds:F0} ms ({id}) without leading it");
        }

        // The read model is the fold of the log up to the checkpoint, each event applied once.
        var checkpoint = await last.Host.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync(ProjectionName);
        var readModels = last.Host.Services.GetRequiredService<ReadModels>();
        foreach (var key in Keys)
        {
            var events = log.Where(e => e.Position <= checkpoint && e.EventType == "kill-model-added")
                .Select(e => (e.Position, Amount: last.Decode(e.Envelope))).Where(e => e.Amount.Key == key).ToList();
            var tally = await readModels.GetAsync(Table, key);
            Assert.Equal(events.Select(e => e.Position), tally?.Positions ?? []);
            Assert.Equal(events.Sum(e => (long)e.Amount.Amount), tally?.Sum ?? 0);
        }

        Note($"checked: {log.Count} events, {committedRows.Count} rows, {sent.Count} sends, {deadLetters.Count} dead letters, " +
            $"{_leases.Count} leases, overlapping leads: {Overlaps()}");
        output.WriteLine(string.Join(Environment.NewLine, _log));
    }

    private bool Handled(Guid id) => _attempts.TryGetValue(id, out var attempts) && attempts.Contains("ok");

    // Two hosts' leases of one resource that overlap in time (the docs allow it for the moment the old leader needs to
    // notice; the checkpoint and at-least-once cover it): reported, not failed.
    private int Overlaps()
    {
        var leases = _leases.ToList();
        return leases.Sum(a => leases.Count(b => b.Node != a.Node && b.Resource == a.Resource && a.From < b.From && (a.To ?? TimeSpan.MaxValue) > b.From));
    }

    private async Task<string> QueueRowsAsync()
    {
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            $"SELECT message_id, attempts, visible_at - clock_timestamp(), lease_owner, lease_until - clock_timestamp() FROM \"{_schema}\".queue_messages WHERE queue = '{_endpoint}'",
            connection);
        await using var reader = await command.ExecuteReaderAsync();
        var rows = new List<string>();
        while (await reader.ReadAsync())
        {
            var id = reader.GetGuid(0);
            rows.Add($"{id.ToString()[^6..]} attempts {reader.GetInt32(1)} visible in {reader.GetValue(2)} owner {reader.GetValue(3)} lease in {reader.GetValue(4)} " +
                $"handler: {string.Join(",", _attempts.TryGetValue(id, out var a) ? a : [])}");
        }

        return string.Join("; ", rows);
    }

    private async Task<List<Guid>> IdsAsync(string table)
    {
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"SELECT id FROM \"{_schema}\".{table}", connection);
        await using var reader = await command.ExecuteReaderAsync();
        var ids = new List<Guid>();
        while (await reader.ReadAsync())
        {
            ids.Add(reader.GetGuid(0));
        }

        return ids;
    }

    private static string Behaviour(Random random) => random.Next(10) switch
    {
        < 5 => "ok",
        < 7 => "hold",
        < 9 => "flaky",
        _ => "poison",
    };

    private async Task<(string Kind, long Killed)> KillAsync(Node node, int kind)
    {
        var mine = $"application_name IN ('{node.Application}', '{node.Application}-renewals') AND pid <> pg_backend_pid()";
        var locks = "(SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)";
        var (name, where) = kind switch
        {
            0 => ("all", mine),
            1 => ("lock connections", $"{mine} AND pid IN {locks}"),
            2 => ("idle pooled", $"{mine} AND state = 'idle' AND pid NOT IN {locks} AND query NOT LIKE 'LISTEN%'"),
            _ => ("listen", $"{mine} AND query LIKE 'LISTEN%'"),
        };
        var killed = await PostgresTestDatabase.ScalarAsync<long>(
            $"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {where}");
        return (name, killed);
    }

    private static async Task<Exception?> TryAsync(Func<Task> action)
    {
        try
        {
            await action().WaitAsync(Deadline);
            return null;
        }
        catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or ObjectDisposedException or OperationCanceledException)
        {
            return ex;
        }
    }

    private static string Failed(Exception? ex) => ex is null ? "" : $" THREW {ex.GetType().Name}: {ex.Message.Split('\n')[0]}";

    private static string Describe(Envelope envelope) => $"{envelope.MessageId.ToString()[^6..]}";

    private string Describe(int seed, string failure) =>
        $"seed {seed}, schema {_schema}: {failure}{Environment.NewLine}operations:{Environment.NewLine}{string.Join(Environment.NewLine, _log)}";

    private void Note(string line) => _log.Enqueue($"{_clock.Elapsed.TotalMilliseconds,7:F0} {line}");

    private OutboxMessage Row(Envelope envelope) => new()
    {
        Id = envelope.MessageId,
        DestinationKind = OutboxDestinationKind.Queue,
        Destination = _endpoint,
        Envelope = envelope,
        CreatedAt = DateTimeOffset.UtcNow,
    };

    private static string Connection(string application) =>
        new NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString) { ApplicationName = application }.ConnectionString;

    private async Task<Node> StartNodeAsync(string name)
    {
        var application = $"kill-model-{name}-{Guid.NewGuid().ToString("N")[..8]}";
        var queue = await PostgresQueueTransportFactory.CreateAsync(Connection(application), o =>
        {
            o.Schema = _schema;
            o.LeaseDuration = TimeSpan.FromSeconds(1);
            o.PollInterval = TimeSpan.FromMilliseconds(50);
        });
        // Only the relay sends through the host's transport: the model's own sends go to the queue transport itself.
        var transport = new RelaySends(queue, this, name);
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(new Recorder(this, name));
        builder.Services.AddHerald(h => h
            .Configure(o => o.EndpointName = _endpoint)
            .UsePostgres(Connection(application), o => o.Schema = _schema)
            .UseTransport(_ => transport)
            .AddMessageType<Added>()
            .AddMessageType<WorkItem>()
            .AddHandler<WorkHandler>(ServiceLifetime.Singleton)
            .ConfigureRetries(r => r.Immediate(1).Delayed(1, TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(200)))
            .AddProjection(new Tallies(this, name))
            .ConfigureProjections(o => o.RetryInterval = TimeSpan.FromMilliseconds(100))
            .UseOutbox(o => o.PollInterval = TimeSpan.FromMilliseconds(50)));
        builder.Services.Replace(ServiceDescriptor.Singleton<ILeaderElection>(sp => new RecordingElection(
            new PostgresLeaderElection(sp.GetRequiredService<PostgresEventStore>(), NullLogger.Instance), this, name)));
        var host = builder.Build();
        await host.StartAsync();
        return new Node(name, application, host, queue);
    }

    /// <summary>Records each send that went out (the time it began): a send the cancelled token stopped sent nothing.</summary>
    private sealed class RelaySends(ITransport inner, BackendKillModelTests test, string node) : DelegatingTransport(inner)
    {
        public override async ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
        {
            var started = test._clock.Elapsed;
            await base.SendAsync(queue, envelope, options, cancellationToken);
            test._work.Enqueue((node, "outbox-relay", started, envelope.MessageId));
        }
    }

    private sealed record Interval(string Node, string Resource, TimeSpan From)
    {
        public TimeSpan? To { get; set; }
    }

    private sealed class SeededModelException(string message, Exception inner) : XunitException(message, inner);

    /// <summary>Records, per host, when it acquired each lease and when its <see cref="LeaderLease.LeadershipLost"/> fired.</summary>
    private sealed class RecordingElection(ILeaderElection inner, BackendKillModelTests test, string node) : ILeaderElection
    {
        public async ValueTask<LeaderLease?> TryAcquireAsync(string resource, CancellationToken cancellationToken = default)
        {
            var lease = await inner.TryAcquireAsync(resource, cancellationToken);
            if (lease is null)
            {
                return null;
            }

            var interval = new Interval(node, resource, test._clock.Elapsed);
            test._leases.Enqueue(interval);
            test.Note($"{node} leads {resource}");
            return new RecordedLease(lease, () =>
            {
                interval.To = test._clock.Elapsed;
                test.Note($"{node} stops leading {resource}");
            });
        }

        public ValueTask<bool> IsLedAsync(string resource, CancellationToken cancellationToken = default) => inner.IsLedAsync(resource, cancellationToken);
    }

    private sealed class RecordedLease : LeaderLease
    {
        private readonly LeaderLease _inner;

        public RecordedLease(LeaderLease inner, Action ended)
            : base(inner.Resource)
        {
            _inner = inner;
            // The end is taken before the guarded work sees the loss, so work done after it shows.
            LeadershipLost.Register(ended);
            inner.LeadershipLost.Register(SignalLost);
        }

        protected override ValueTask ReleaseAsync() => _inner.DisposeAsync();
    }

    private sealed class Node(string name, string application, IHost host, ITransport queue) : IAsyncDisposable
    {
        public string Name => name;

        public string Application => application;

        public IHost Host => host;

        public ITransport Queue => queue;

        public PostgresEventStore Store => host.Services.GetRequiredService<PostgresEventStore>();

        public IEventStore Events => host.Services.GetRequiredService<IEventStore>();

        public IOutboxStore Outbox => host.Services.GetRequiredService<IOutboxStore>();

        public Envelope Event(string key, int amount) => host.Services.GetRequiredService<EnvelopeFactory>().Create(new Added(key, amount));

        public Envelope Work(string behaviour) => host.Services.GetRequiredService<EnvelopeFactory>().Create(new WorkItem(behaviour));

        public Added Decode(Envelope envelope) =>
            (Added)host.Services.GetRequiredService<IMessageSerializer>().Deserialize(envelope.Body, typeof(Added))!;

        public async ValueTask DisposeAsync()
        {
            using var stop = new CancellationTokenSource(Deadline);
            await host.StopAsync(stop.Token);
            host.Dispose();
            await queue.DisposeAsync();
        }
    }

    [MessageType("kill-model-added")]
    public sealed record Added(string Key, int Amount);

    [MessageType("kill-model-work")]
    public sealed record WorkItem(string Behaviour);

    /// <summary>The read model: per key, the sum of the amounts and the positions applied, in order.</summary>
    public sealed record Tally(string Key, long Sum, long[] Positions);

    private sealed class Recorder(BackendKillModelTests test, string node)
    {
        public BackendKillModelTests Test => test;

        public string Node => node;
    }

    private sealed class WorkHandler(Recorder recorder) : IMessageHandler<WorkItem>
    {
        public async ValueTask HandleAsync(WorkItem message, MessageContext context, CancellationToken cancellationToken)
        {
            var attempts = recorder.Test._attempts.GetOrAdd(context.Envelope.MessageId, _ => new ConcurrentQueue<string>());
            var before = attempts.Count;
            if (message.Behaviour == "poison" || (message.Behaviour == "flaky" && before == 0))
            {
                attempts.Enqueue("threw on " + recorder.Node);
                throw new InvalidOperationException($"{message.Behaviour} work");
            }

            if (message.Behaviour == "hold")
            {
                // Past the queue's 1 s lease: its renewals must get through the kills.
                await Task.Delay(TimeSpan.FromMilliseconds(1300), cancellationToken);
            }

            attempts.Enqueue("ok");
        }
    }

    private sealed class Tallies : Projection
    {
        public Tallies(BackendKillModelTests test, string node)
            : base(ProjectionName)
        {
            Table(BackendKillModelTests.Table);
            On<Added>(async (e, context, _) =>
            {
                test._work.Enqueue((node, "projection:" + ProjectionName, test._clock.Elapsed, context.Envelope.MessageId));
                var position = context.Position!.Value;
                await context.UpdateAsync(BackendKillModelTests.Table, e.Key, t => t is null
                    ? new Tally(e.Key, e.Amount, [position])
                    : t with { Sum = t.Sum + e.Amount, Positions = [.. t.Positions, position] });
            });
        }
    }
}
