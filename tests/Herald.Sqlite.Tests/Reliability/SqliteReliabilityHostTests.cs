using Herald.Sqlite.Persistence;
using Herald.Sqlite.EventSourcing;
using Herald.Persistence;
using System.Text.Json;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Sqlite.Reliability;
using Herald.Conformance;
using Herald.Processes;
using Herald.Transport.InMemory;
using Herald.Projections;
using Herald.Sqlite.Projections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Sqlite.Tests.Reliability;

public sealed class SqliteReliabilityHostTests : IDisposable
{
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    [Fact]
    public async Task UseSqlite_ReplacesTheInMemoryReliabilityStores_WithOnesOnTheSameFile()
    {
        using var host = await StartAsync(_database.Path, h => h.Configure(o => o.StartConsumer = false));
        var store = host.Services.GetRequiredService<SqliteEventStore>();

        Assert.IsType<SqliteDeadLetterStore>(host.Services.GetRequiredService<IDeadLetterStore>());
        Assert.IsType<SqliteOutboxStore>(host.Services.GetRequiredService<IOutboxStore>());
        Assert.IsType<SqliteInbox>(host.Services.GetRequiredService<IInbox>());
        Assert.IsType<SqliteIdempotencyStore>(host.Services.GetRequiredService<IIdempotencyStore>());
        Assert.IsType<SqliteReadModelStore>(host.Services.GetRequiredService<IReadModelStore>());
        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = Assert.IsType<SqliteUnitOfWork>(scope.ServiceProvider.GetRequiredService<IUnitOfWork>());
            Assert.Same(store, unitOfWork.Store);
        }

        Assert.Equal(
            4L,
            _database.Scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('herald_dead_letters', 'herald_outbox', 'herald_inbox', 'herald_idempotency')"));
        await host.StopAsync();
    }

    [Fact]
    public async Task HandlerMessages_LeaveOnlyFromTheAttemptThatCommits_AndAFailingHandlerSendsNothing()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        var transport = new RecordingTransport(new InMemoryTransport(InMemoryTransportOptions.Default, TimeProvider.System));
        using var host = await StartAsync(_database.Path, h => h
            .UseTransport(_ => transport)
            .AddHandler<ForwardingHandler>(ServiceLifetime.Singleton)
            .AddMessageType<Forward>()
            .AddMessageType<Forwarded>()
            .Route<Forwarded>(downstream)
            .UseInbox()
            .UseOutbox()
            .ConfigureRetries(r => r.Immediate(2).NeverRetry<NotSupportedException>()));
        var bus = host.Services.GetRequiredService<IMessageBus>();

        // 1 fails twice and commits on its third attempt; 2 fails for good on its first.
        await bus.SendAsync(new Forward(Number: 1, FailTimes: 2, Poison: false));
        await bus.SendAsync(new Forward(Number: 2, FailTimes: 0, Poison: true));

        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        await Eventually.UntilAsync(async () => await deadLetters.CountAsync(DeadLetterQuery.All) == 1, "the poison message is dead-lettered");
        await Eventually.UntilAsync(() => SentTo(transport, downstream).Count >= 1, "the committed attempt's message leaves");
        var outbox = host.Services.GetRequiredService<IOutboxStore>();
        await Eventually.UntilAsync(async () => await outbox.CountPendingAsync() == 0, "the outbox is empty");
        await host.StopAsync();

        var sent = Assert.Single(SentTo(transport, downstream));
        Assert.Equal(1, JsonSerializer.Deserialize<Forwarded>(sent.Body.Span, JsonSerializerOptions.Web)!.Number);
        Assert.Equal(1L, _database.Scalar("SELECT COUNT(*) FROM herald_outbox"));
        Assert.Equal(1L, _database.Scalar("SELECT COUNT(*) FROM herald_inbox"));
        Assert.Equal(1L, _database.Scalar("SELECT COUNT(*) FROM herald_dead_letters"));
    }

    [Fact]
    public async Task TwoHostsOnOneFile_RunOneOutboxRelay_AndTheOtherLeadsOnceTheFirstStops()
    {
        // Two processes on one file each led in their own process, so both relayed every pending row (a second copy of
        // every message). Two hosts in this process, each with its own connections, stand for them.
        var first = await StartAsync(_database.Path, h => h.Configure(o => o.StartConsumer = false).UseOutbox());
        using var second = await StartAsync(_database.Path, h => h.Configure(o => o.StartConsumer = false));
        var firstElection = first.Services.GetRequiredService<ILeaderElection>();
        var secondElection = second.Services.GetRequiredService<ILeaderElection>();
        try
        {
            await Eventually.UntilAsync(async () => await firstElection.IsLedAsync("outbox-relay"), "the first host's relay leads");
            Assert.True(await secondElection.IsLedAsync("outbox-relay"));
            Assert.Null(await secondElection.TryAcquireAsync("outbox-relay"));
            Assert.Null(await firstElection.TryAcquireAsync("outbox-relay")); // not re-entrant either
        }
        finally
        {
            await first.StopAsync();
            first.Dispose();
        }

        Assert.False(await secondElection.IsLedAsync("outbox-relay"));
        var lease = await secondElection.TryAcquireAsync("outbox-relay");
        Assert.NotNull(lease);
        await lease.DisposeAsync();
        await second.StopAsync();
    }

    [Fact]
    public async Task ALeaderOfTheFile_HoldsAnOsLockAnotherProcessSees_UntilItsLeaseEnds()
    {
        if (!OperatingSystem.IsLinux())
        {
            return; // flock(1) of util-linux stands for the other process.
        }

        var election = new SqliteLeaderElection(_database.Path);
        var lease = await election.TryAcquireAsync("outbox-relay");
        Assert.NotNull(lease);
        var lockFile = Assert.Single(Directory.GetFiles(_database.Path + "-leaders"));

        // flock --nonblock exits 1 while another process holds the lock, 0 once it is free.
        var held = await ExternalProcess.RunAsync("flock", ["--nonblock", "--exclusive", lockFile, "true"], TimeSpan.FromSeconds(30));
        Assert.Equal(1, held.Code);
        await lease.DisposeAsync();
        var free = await ExternalProcess.RunAsync("flock", ["--nonblock", "--exclusive", lockFile, "true"], TimeSpan.FromSeconds(30));
        Assert.Equal(0, free.Code);
    }

    [Theory]
    [InlineData("uri")]
    [InlineData("symlink")]
    [InlineData("datadirectory")]
    public async Task TwoHostsNamingOneFileDifferently_StillElectOneLeader(string alias)
    {
        // The lock files sat next to the file as the connection string named it: a process naming it by a URI
        // (file:...), through a symbolic link to it or with |DataDirectory| locked files elsewhere, and led beside a
        // process naming it by its path.
        string other;
        if (alias == "uri")
        {
            other = "Data Source=file:" + _database.Path;
        }
        else if (alias == "datadirectory")
        {
            // Only this test sets it; the provider reads it when a connection naming |DataDirectory| opens.
            AppDomain.CurrentDomain.SetData("DataDirectory", Path.GetDirectoryName(_database.Path));
            other = "Data Source=|DataDirectory|" + Path.GetFileName(_database.Path);
        }
        else
        {
            other = _database.Path + "-link.db";
            File.CreateSymbolicLink(other, _database.Path);
        }

        try
        {
            using var first = await StartAsync(_database.Path, h => h.Configure(o => o.StartConsumer = false));
            using var second = await StartAsync(other, h => h.Configure(o => o.StartConsumer = false));
            var lease = await first.Services.GetRequiredService<ILeaderElection>().TryAcquireAsync("outbox-relay");
            Assert.NotNull(lease);
            await using (lease)
            {
                var secondElection = second.Services.GetRequiredService<ILeaderElection>();
                Assert.True(await secondElection.IsLedAsync("outbox-relay"));
                var twice = await secondElection.TryAcquireAsync("outbox-relay");
                if (twice is not null)
                {
                    await twice.DisposeAsync();
                }

                Assert.Null(twice);
            }

            await first.StopAsync();
            await second.StopAsync();
        }
        finally
        {
            if (alias == "symlink")
            {
                File.Delete(other);
            }
        }
    }

    internal static async Task<IHost> StartAsync(string path, Action<HeraldBuilder> configure)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h =>
        {
            h.Configure(o => o.EndpointName = "sqlrel-" + Guid.NewGuid().ToString("N")[..8]);
            h.UseSqlite(path);
            configure(h);
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    internal static List<Envelope> SentTo(RecordingTransport transport, string destination) =>
        [.. transport.Sent.Where(s => s.Destination == destination).Select(s => s.Envelope)];

    [MessageType("sqlrel-forward")]
    public sealed record Forward(int Number, int FailTimes, bool Poison);

    [MessageType("sqlrel-forwarded")]
    public sealed record Forwarded(int Number);

    public sealed class ForwardingHandler : IMessageHandler<Forward>
    {
        public async ValueTask HandleAsync(Forward message, MessageContext context, CancellationToken cancellationToken)
        {
            await context.SendAsync(new Forwarded(message.Number), cancellationToken: cancellationToken);
            if (message.Poison)
            {
                throw new NotSupportedException("failing for good after sending");
            }

            if (context.Attempt <= message.FailTimes)
            {
                throw new TimeoutException($"failing after sending, attempt {context.Attempt}");
            }
        }
    }
}
