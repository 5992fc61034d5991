using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Conformance.Reliability;
using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Hosting;
using Herald.Messages;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Tests.EventSourcing;
using Herald.Postgres.Persistence;
using Herald.Postgres.Transport;
using Herald.Reliability.Outbox;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Postgres.Tests.Faults;

/// <summary>
/// Production connections get cut (a failover, an idle timeout, a proxy restart): each component's backends are
/// terminated with pg_terminate_backend while it works. Only this test's backends are touched: they are picked by an
/// application name no other test uses. Nothing is lost, nothing is applied twice beyond at-least-once, the component
/// recovers by itself and logs the failure.
/// </summary>
public sealed class BackendTerminationTests : IAsyncLifetime
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private readonly string _schema = PostgresTestDatabase.NewSchema();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => PostgresTestDatabase.DropSchemaAsync(_schema);

    [Fact]
    public async Task TheAppendWritersConnectionTerminated_WithAppendsQueuedAndInFlight_EachCallerGetsItsResultOrAnError_ARetryIsIdempotent_AndLaterAppendsCommit()
    {
        var application = NewApplicationName("append");
        var writerFailed = new LogEventCounter(4021);
        using var loggers = LoggerFactory.Create(b => b.AddProvider(writerFailed));
        await using var store = await PostgresEventStore.CreateAsync(
            Connection(application), new PostgresStoreOptions { Schema = _schema, AppendWriters = 1, LoggerFactory = loggers });

        // The only writer waits for a row lock another transaction holds: its group is in flight, the next appends queue behind it.
        var held = TestEvents.NewStream();
        await using var holder = await HeldAppend.BeginAsync(store, held, ExpectedVersion.NoStream, TestEvents.Many(1));
        var inFlightEvents = TestEvents.Many(1);
        var inFlight = store.AppendAsync(held, ExpectedVersion.Any, inFlightEvents).AsTask();
        var writer = 0;
        await Eventually.UntilAsync(
            async () => (writer = await PostgresTestDatabase.ScalarAsync<int>(
                $"SELECT coalesce(min(pid), 0) FROM pg_stat_activity WHERE {holder.ProcessId} = ANY (pg_blocking_pids(pid))")) > 0,
            "the writer waits for the held row lock");
        var queued = Enumerable.Range(0, 20).Select(_ => (Stream: TestEvents.NewStream(), Events: TestEvents.Many(2))).ToList();
        var appends = queued.Select(q => store.AppendAsync(q.Stream, ExpectedVersion.NoStream, q.Events).AsTask()).ToList();

        Assert.True(await PostgresTestDatabase.ScalarAsync<bool>($"SELECT pg_terminate_backend({writer})"));

        // The in-flight group failed with the connection and wrote nothing; the queued ones commit on a new connection.
        await Assert.ThrowsAnyAsync<NpgsqlException>(() => inFlight.WaitAsync(Deadline));
        var results = await Task.WhenAll(appends).WaitAsync(Deadline);
        Assert.All(results, r => Assert.Equal(2, r.StreamVersion));
        await holder.CommitAsync();

        // The caller retries with the same event ids: it commits once, and again changes nothing.
        var retried = await store.AppendAsync(held, ExpectedVersion.Any, inFlightEvents).AsTask().WaitAsync(Deadline);
        var again = await store.AppendAsync(held, ExpectedVersion.Exactly(1), inFlightEvents).AsTask().WaitAsync(Deadline);
        Assert.Equal(2, retried.StreamVersion);
        Assert.Equal(retried.LastPosition, again.LastPosition);
        Assert.Equal(2, (await TestEvents.ReadStreamAsync(store, held)).Count);
        foreach (var (stream, events) in queued)
        {
            Assert.Equal(events.Select(e => e.MessageId), (await TestEvents.ReadStreamAsync(store, stream)).Select(e => e.EventId));
        }

        var later = await store.AppendAsync(TestEvents.NewStream(), ExpectedVersion.NoStream, TestEvents.Many(1)).AsTask().WaitAsync(Deadline);
        Assert.Equal(1, later.StreamVersion);
        Assert.True(writerFailed.Count >= 1, "the writer's failure was not logged");
    }

    [Fact]
    public async Task TheQueuesConnectionsTerminated_WhileAHandlerRuns_TheMessageIsHandledAndSettled_AndTheConsumerGoesOn()
    {
        var queue = NewApplicationName("queue");
        await using var transport = await PostgresQueueTransportFactory.CreateAsync(Connection(queue), o =>
        {
            o.Schema = _schema;
            o.LeaseDuration = TimeSpan.FromSeconds(1);
            o.PollInterval = TimeSpan.FromMilliseconds(50);
        });
        var handled = new ConcurrentQueue<Guid>();
        var running = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, ct) =>
        {
            running.TrySetResult();
            await release.Task.WaitAsync(ct);
            handled.Enqueue(delivery.Envelope.MessageId);
        });
        var first = TestEnvelopes.Create(partitionKey: null);
        await transport.SendAsync(queue, first);
        await running.Task.WaitAsync(Deadline);

        // Every backend of the queue: its claims, its renewals' and its notifications' connections, idle ones in the pool too.
        var killedAt = await PostgresTestDatabase.ScalarAsync<DateTime>("SELECT clock_timestamp()");
        Assert.True(await KillAsync(queue) + await KillAsync(queue + "-renewals") > 0);

        // The handler outlives its lease on the cut connections, then returns: its renewals and its ack must get through.
        await Eventually.UntilAsync(async () => await RenewedAfterAsync(queue, killedAt), "a renewal lands after the kill", Deadline);
        release.TrySetResult();
        await Eventually.UntilAsync(async () => await CountQueuedAsync(queue) == 0, "the handled message is settled", Deadline);
        Assert.Contains(first.MessageId, handled);

        var second = TestEnvelopes.Create(partitionKey: null);
        await transport.SendAsync(queue, second);
        await Eventually.UntilAsync(() => handled.Contains(second.MessageId), "the consumer goes on with the next message", Deadline);
        await Eventually.UntilAsync(async () => await CountQueuedAsync(queue) == 0, "the next message is settled", Deadline);
    }

    [Fact]
    public async Task TheLeadingRelaysBackendsTerminated_MidBatch_ItSendsNothingMoreOnceAnotherLeads_AndEveryRowIsSent()
    {
        var scene = await RelayScene.StartAsync(this, nodes: 2);
        await using (scene)
        {
            // The leader holds its first send until its backends (the lock's among them) are gone, it noticed and another leads.
            var leader = await scene.FirstSend.Task.WaitAsync(Deadline);
            Assert.True(await KillAsync(scene.Application(leader)) > 0);
            await Eventually.UntilAsync(() => scene.LeadershipLost(leader) > 0 && scene.Sends.Any(s => s.Node != leader), "another node leads and sends", Deadline);
            scene.Gate.Set();

            await scene.AssertEverySentAsync(maxTwice: 1);
            Assert.Equal(1, scene.Sends.Count(s => s.Node == leader));
            await scene.AssertARowAddedLaterIsSentAsync();
        }
    }

    [Fact]
    public async Task TheRelaysIdlePooledConnectionsTerminated_MidBatch_ItsSentRowsAreMarked_NotSentAgain()
    {
        var scene = await RelayScene.StartAsync(this, nodes: 1);
        await using (scene)
        {
            // An idle timeout or a proxy cuts the pool's idle connections; the lock's connection stays.
            var leader = await scene.FirstSend.Task.WaitAsync(Deadline);
            var key = AdvisoryLockKey.ForLeadership(_schema, "outbox-relay");
            var holder = await Tests.Persistence.LeaderElectionSchema.HolderAsync(key);
            Assert.NotNull(holder);
            Assert.True(await KillAsync(scene.Application(leader), except: holder.Value) > 0);
            scene.Gate.Set();

            await scene.AssertEverySentAsync(maxTwice: 0);
            Assert.Equal(0, scene.LeadershipLost(leader));
            await scene.AssertARowAddedLaterIsSentAsync();
        }
    }

    [Fact]
    public async Task TheListenConnectionTerminated_ASubscriptionCatchesUpByItsFallbackPoll_AndListensAgain()
    {
        var application = NewApplicationName("listen");
        await using var follower = await PostgresEventStore.CreateAsync(Connection(application), new PostgresStoreOptions
        {
            Schema = _schema,
            ListenerReconnectDelay = TimeSpan.FromSeconds(5),
            NotificationFallbackInterval = TimeSpan.FromMilliseconds(100),
        });
        await using var writer = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = _schema });
        var seen = new ConcurrentQueue<RecordedEvent>();
        await using var subscription = await EventSubscription.StartNewAsync(follower, follower, (e, _) =>
        {
            seen.Enqueue(e);
            return ValueTask.CompletedTask;
        }, new EventSubscriptionOptions { SubscriptionId = "kill-listen" });
        var before = await writer.AppendAsync(TestEvents.NewStream(), ExpectedVersion.NoStream, TestEvents.Many(1));
        await subscription.WaitForPositionAsync(before.LastPosition).WaitAsync(Deadline);
        await Eventually.UntilAsync(() => follower.Listener is { IsListening: true }, "the follower listens");
        var listener = follower.Listener!;
        var connects = listener.Connects;

        Assert.True(await KillAsync(application) > 0);
        await Eventually.UntilAsync(() => !listener.IsListening, "the listener notices");
        var during = await writer.AppendAsync(TestEvents.NewStream(), ExpectedVersion.NoStream, TestEvents.Many(1));
        await subscription.WaitForPositionAsync(during.LastPosition).WaitAsync(Deadline);

        await Eventually.UntilAsync(() => listener.Connects > connects && listener.IsListening, "the listener reconnects", Deadline);
        var after = await writer.AppendAsync(TestEvents.NewStream(), ExpectedVersion.NoStream, TestEvents.Many(1));
        await subscription.WaitForPositionAsync(after.LastPosition).WaitAsync(Deadline);
        Assert.Equal(3, seen.Count);
        Assert.Equal(seen.Select(e => e.Position).Order(), seen.Select(e => e.Position));
    }

    /// <summary>Relays on <c>nodes</c> hosts of one schema, each with its own pool (application name), sending to one recording sink; the first send waits for <see cref="Gate"/>.</summary>
    private sealed class RelayScene : IAsyncDisposable
    {
        private const int Rows = 40;
        private readonly BackendTerminationTests _test;
        private readonly string _destination = "kill-relay-" + Guid.NewGuid().ToString("N")[..8];
        private readonly List<(string Node, string Application, IHost Host, LogEventCounter Lost)> _nodes = [];
        private List<Guid> _ids = [];

        private RelayScene(BackendTerminationTests test) => _test = test;

        public ConcurrentQueue<(string Node, Guid Id)> Sends { get; } = new();

        public TaskCompletionSource<string> FirstSend { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ManualResetEventSlim Gate { get; } = new();

        public static async Task<RelayScene> StartAsync(BackendTerminationTests test, int nodes)
        {
            var scene = new RelayScene(test);
            for (var i = 0; i < nodes; i++)
            {
                await scene.StartNodeAsync(((char)('a' + i)).ToString());
            }

            scene._ids = [.. Enumerable.Range(0, Rows).Select(_ => Guid.CreateVersion7())];
            await scene._nodes[0].Host.Services.GetRequiredService<IOutboxStore>().AddAsync([.. scene._ids.Select(scene.Row)]);
            return scene;
        }

        public string Application(string node) => _nodes.Single(n => n.Node == node).Application;

        public int LeadershipLost(string node) => _nodes.Single(n => n.Node == node).Lost.Count;

        public async Task AssertEverySentAsync(int maxTwice)
        {
            await Eventually.UntilAsync(
                async () => await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{_test._schema}\".outbox WHERE sent_at IS NULL") == 0,
                "every row is sent and marked",
                Deadline);
            var counts = Sends.GroupBy(s => s.Id).ToDictionary(g => g.Key, g => g.Count());
            Assert.Equal(_ids.Order(), counts.Keys.Order());
            var twice = counts.Where(c => c.Value > 1).Select(c => c.Key).ToList();
            Assert.True(twice.Count <= maxTwice, $"{twice.Count} rows were sent more than once; sends by node: {string.Join(" ", Sends.Select(s => s.Node))}");
        }

        public async Task AssertARowAddedLaterIsSentAsync()
        {
            var later = Guid.CreateVersion7();
            var store = _nodes[^1].Host.Services.GetRequiredService<IOutboxStore>();
            await Eventually.UntilAsync(
                async () =>
                {
                    try
                    {
                        // The test's own call may meet a connection of the cut pool once.
                        await store.AddAsync([Row(later)]);
                        return true;
                    }
                    catch (NpgsqlException)
                    {
                        return false;
                    }
                },
                "the row is added");
            await Eventually.UntilAsync(() => Sends.Any(s => s.Id == later), "a row added after the kill is sent", Deadline);
        }

        public async ValueTask DisposeAsync()
        {
            Gate.Set();
            foreach (var (_, _, host, _) in _nodes)
            {
                await host.StopAsync();
                host.Dispose();
            }

            Gate.Dispose();
        }

        private OutboxMessage Row(Guid id) => BackendTerminationTests.Row(id, _destination);

        private async Task StartNodeAsync(string node)
        {
            var application = NewApplicationName("relay-" + node);
            var lost = new LogEventCounter(4030);
            var transport = new RecordingTransport(new InMemoryTransport(InMemoryTransportOptions.Default, TimeProvider.System))
            {
                FailSend = (_, envelope) =>
                {
                    Sends.Enqueue((node, envelope.MessageId));
                    if (FirstSend.TrySetResult(node))
                    {
                        Gate.Wait(Deadline);
                    }

                    return null;
                },
            };
            var builder = Host.CreateApplicationBuilder();
            builder.Logging.ClearProviders();
            builder.Logging.AddProvider(lost);
            builder.Services.AddHerald(h => h
                .Configure(o =>
                {
                    o.EndpointName = "kill-relay-" + node;
                    o.StartConsumer = false;
                })
                .UsePostgres(Connection(application), o => o.Schema = _test._schema)
                .UseTransport(_ => transport)
                .UseOutbox(o =>
                {
                    o.PollInterval = TimeSpan.FromMilliseconds(50);
                    o.BatchSize = 10;
                }));
            var host = builder.Build();
            await host.StartAsync();
            _nodes.Add((node, application, host, lost));
        }
    }

    private static OutboxMessage Row(Guid id, string destination) => new()
    {
        Id = id,
        DestinationKind = OutboxDestinationKind.Queue,
        Destination = destination,
        Envelope = TestEnvelopes.Create(partitionKey: null) with { MessageId = id },
        CreatedAt = DateTimeOffset.UtcNow,
    };

    private static string NewApplicationName(string what) => $"kill-{what}-{Guid.NewGuid().ToString("N")[..8]}";

    private static string Connection(string application) =>
        new NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString) { ApplicationName = application }.ConnectionString;

    /// <summary>Terminates every backend named <paramref name="application"/> (this test's own); returns how many.</summary>
    private static Task<long> KillAsync(string application, int except = 0) =>
        PostgresTestDatabase.ScalarAsync<long>(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity " +
            $"WHERE application_name = '{application}' AND pid <> pg_backend_pid() AND pid <> {except}");

    private Task<long> CountQueuedAsync(string queue) =>
        PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{_schema}\".queue_messages WHERE queue = '{queue}'");

    // A renewal before the kill leases up to one lease (1 s) past it: a lease reaching further, still held, was renewed after it.
    private Task<bool> RenewedAfterAsync(string queue, DateTime killedAt) =>
        PostgresTestDatabase.ScalarAsync<bool>(
            $"SELECT coalesce(bool_or(lease_until > '{killedAt:O}'::timestamptz + interval '1500 milliseconds' " +
            $"AND lease_until > clock_timestamp()), false) FROM \"{_schema}\".queue_messages WHERE queue = '{queue}'");
}
