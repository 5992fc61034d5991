using System.Diagnostics;
using System.Globalization;
using Herald.Processes;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Persistence;
using Herald.Postgres.Tests.Persistence;
using Herald.Postgres.Reliability;
using Herald.Reliability.Outbox;
using Herald.Conformance;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace Herald.Postgres.Tests.Reliability;

/// <summary>
/// Issue 4 on PostgreSQL: "a process killed with SIGKILL between the database commit and the send still sends every
/// committed message after restart". The child (Herald.CrashChild) commits outbox messages, enlists more in a unit of work
/// it never commits, and runs the relay, which takes the schema's outbox leadership (a session advisory lock through
/// ILeaderElection) and is caught mid-send; it is really killed, and a host started here on the same schema must take the
/// leadership over and relay.
/// </summary>
public sealed class OutboxCrashTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int Messages = 25;

    // The outbox relay's resource (OutboxRelay.LeadershipResource, internal to the core).
    private const string RelayResource = "outbox-relay";

    // The killed session's advisory lock goes when the server sees its connection close, which a kill does at once.
    private static readonly TimeSpan TakeoverDeadline = TimeSpan.FromSeconds(10);
    private readonly TemporarySchema _schema = new();

    private long RelayKey => AdvisoryLockKey.ForLeadership(_schema.Name, RelayResource);

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => _schema.DisposeAsync().AsTask();

    [Fact]
    public async Task RelayLeaderKilledMidSend_NextRelayTakesOverAndSendsEveryCommittedMessageExactlyOnce_AndNothingUncommitted()
    {
        List<Guid> committed, uncommitted;
        Guid midSend;
        int childBackend;
        using (var child = await CrashChildProcess.StartAsync(
            "postgres", PostgresTestDatabase.ConnectionString, _schema.Name, Messages.ToString(CultureInfo.InvariantCulture)))
        {
            (committed, uncommitted) = (child.Committed, child.Uncommitted);
            Assert.Equal(Messages, committed.Count);
            Assert.Equal(Messages, uncommitted.Count);
            midSend = Assert.NotNull(child.Sending);
            Assert.Equal(committed[0], midSend);

            // The child leads: another node cannot. Without this, the takeover below would prove nothing.
            await using (var store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = _schema.Name }))
            {
                Assert.Null(await new PostgresLeaderElection(store, NullLogger.Instance).TryAcquireAsync(RelayResource));
            }

            childBackend = Assert.NotNull(await LeaderElectionSchema.HolderAsync(RelayKey));
            Assert.NotEqual(0, await child.KillAsync());
        }

        var killed = Stopwatch.StartNew();
        var transport = new RecordingTransport(new InMemoryTransport(InMemoryTransportOptions.Default, TimeProvider.System));
        await transport.DeclareQueueAsync("crash-queue");
        using var host = await StartAsync(transport);
        var outbox = Assert.IsType<PostgresOutboxStore>(host.Services.GetRequiredService<IOutboxStore>());

        // The only other contender is the relay here.
        await Eventually.UntilAsync(
            async () => await LeaderElectionSchema.HolderAsync(RelayKey) is { } holder && holder != childBackend,
            "the relay here takes over the killed leader's outbox leadership",
            TakeoverDeadline);
        output.WriteLine($"took over {killed.ElapsedMilliseconds} ms after the kill");
        await Eventually.UntilAsync(() => SentIds(transport).Count >= Messages, "every committed message is sent", TimeSpan.FromSeconds(30));
        await Eventually.UntilAsync(async () => await outbox.CountPendingAsync() == 0, "nothing is pending");
        await host.StopAsync();

        // The killed relay's send never reached a transport (the child's stalls), so here every committed message, the one
        // left mid-send included, goes out exactly once, oldest first. In general a kill between a send that reached the
        // broker and its mark sends that message again (at least once).
        var sent = SentIds(transport);
        Assert.Equal(committed, sent);
        Assert.Empty(sent.Intersect(uncommitted));
        foreach (var id in uncommitted)
        {
            Assert.Null(await outbox.GetAsync(id));
        }

        Assert.Equal((long)Messages, await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{_schema.Name}\".outbox"));
    }

    // The child gives each envelope its outbox row's id, so a sent envelope names its row.
    private static List<Guid> SentIds(RecordingTransport transport) =>
        [.. transport.Sent.Where(s => s.Destination == "crash-queue").Select(s => s.Envelope.MessageId)];

    private async Task<IHost> StartAsync(RecordingTransport transport)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h => h
            .Configure(o =>
            {
                o.EndpointName = "pgcrash-" + Guid.NewGuid().ToString("N")[..8];
                o.StartConsumer = false;
            })
            .UsePostgres(PostgresTestDatabase.ConnectionString, o => o.Schema = _schema.Name)
            .UseTransport(_ => transport)
            .UseOutbox(o => o.PollInterval = TimeSpan.FromMilliseconds(50)));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }
}
