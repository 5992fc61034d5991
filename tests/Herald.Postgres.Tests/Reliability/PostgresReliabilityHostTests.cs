using Herald.Persistence;
using System.Text.Json;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Persistence;
using Herald.Postgres.Reliability;
using Herald.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Conformance;
using Herald.Transport.InMemory;
using Herald.Projections;
using Herald.Postgres.Projections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Postgres.Tests.Reliability;

public sealed class PostgresReliabilityHostTests : IAsyncLifetime
{
    private readonly string _schema = PostgresTestDatabase.NewSchema();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => PostgresTestDatabase.DropSchemaAsync(_schema);

    [Fact]
    public async Task UsePostgres_ReplacesTheInMemoryReliabilityStores_WithOnesInTheSameSchema()
    {
        using var host = await StartAsync(h => h.Configure(o => o.StartConsumer = false));
        var store = host.Services.GetRequiredService<PostgresEventStore>();

        Assert.IsType<PostgresDeadLetterStore>(host.Services.GetRequiredService<IDeadLetterStore>());
        Assert.IsType<PostgresOutboxStore>(host.Services.GetRequiredService<IOutboxStore>());
        Assert.IsType<PostgresInbox>(host.Services.GetRequiredService<IInbox>());
        Assert.IsType<PostgresIdempotencyStore>(host.Services.GetRequiredService<IIdempotencyStore>());
        Assert.IsType<PostgresReadModelStore>(host.Services.GetRequiredService<IReadModelStore>());
        Assert.IsType<PostgresLeaderElection>(host.Services.GetRequiredService<ILeaderElection>());
        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = Assert.IsType<PostgresUnitOfWork>(scope.ServiceProvider.GetRequiredService<IUnitOfWork>());
            Assert.Same(store, unitOfWork.Store);
        }

        Assert.Equal(4L, await PostgresTestDatabase.ScalarAsync<long>(
            $"SELECT count(*) FROM information_schema.tables WHERE table_schema = '{_schema}' AND table_name IN ('dead_letters', 'outbox', 'inbox', 'idempotency')"));
        await host.StopAsync();
    }

    // Two applications on one schema shared its idempotency keys: one reusing another's key got the other's stored result
    // (over HTTP, its response), as Redis did before its prefix took the application name.
    [Fact]
    public async Task TwoApplicationsOnOneSchema_KeepTheirOwnIdempotencyKeys_WhileInstancesOfOneApplicationShareThem()
    {
        var key = "shared-" + Guid.NewGuid().ToString("N");
        var ttl = TimeSpan.FromMinutes(1);
        using var billing = await StartAsync(h => h.Configure(o => o.StartConsumer = false), "billing");
        using var billingToo = await StartAsync(h => h.Configure(o => o.StartConsumer = false), "billing");
        using var shipping = await StartAsync(h => h.Configure(o => o.StartConsumer = false), "shipping");
        var store = billing.Services.GetRequiredService<IIdempotencyStore>();
        var taken = await store.TryAcquireAsync(key, ttl);
        Assert.True(await store.CompleteAsync(key, taken.LockToken, "billing's result"u8.ToArray(), ttl));

        var other = await shipping.Services.GetRequiredService<IIdempotencyStore>().TryAcquireAsync(key, ttl);
        var same = await billingToo.Services.GetRequiredService<IIdempotencyStore>().TryAcquireAsync(key, ttl);

        Assert.Equal(IdempotencyAcquireStatus.Acquired, other.Status);
        Assert.Equal(IdempotencyAcquireStatus.Completed, same.Status);
        Assert.Equal("billing's result"u8.ToArray(), same.Result.ToArray());
    }

    [Fact]
    public async Task HandlerMessages_LeaveOnlyFromTheAttemptThatCommits_AndAFailingHandlerSendsNothing()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        var transport = new RecordingTransport(new InMemoryTransport(InMemoryTransportOptions.Default, TimeProvider.System));
        using var host = await StartAsync(h => h
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
        Assert.Equal(1L, await CountAsync("outbox"));
        Assert.Equal(1L, await CountAsync("inbox"));
        Assert.Equal(1L, await CountAsync("dead_letters"));
    }

    private static List<Envelope> SentTo(RecordingTransport transport, string destination) =>
        [.. transport.Sent.Where(s => s.Destination == destination).Select(s => s.Envelope)];

    private Task<long> CountAsync(string table) => PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{_schema}\".{table}");

    private async Task<IHost> StartAsync(Action<HeraldBuilder> configure, string? applicationName = null)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { ApplicationName = applicationName });
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h =>
        {
            h.Configure(o => o.EndpointName = "pgrel-" + Guid.NewGuid().ToString("N")[..8]);
            h.UsePostgres(PostgresTestDatabase.ConnectionString, o => o.Schema = _schema);
            configure(h);
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [MessageType("pgrel-forward")]
    public sealed record Forward(int Number, int FailTimes, bool Poison);

    [MessageType("pgrel-forwarded")]
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
