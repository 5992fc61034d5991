using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Reflection;
using System.Text.Json;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Persistence;
using Herald.Projections;
using Herald.Internal;
using Herald.Reliability.DeadLetters;
using Herald.Conformance.Transport;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Herald.AspNetCore.Tests;

public sealed class HealthTests
{
    public sealed record OrderSummary(string OrderId);

    public sealed class OrderSummaries : Projection
    {
        public static readonly ReadModelTable<OrderSummary> Orders = new("http_health_orders");

        public OrderSummaries()
            : base("http-health-orders")
        {
            Table(Orders);
            On<OrderPlaced>((e, context, _) => context.UpsertAsync(Orders, e.OrderId, new OrderSummary(e.OrderId)));
        }
    }

    /// <summary>
    /// A projection whose runner stops on a failure whose message no anonymous caller should read. A handler's ordinary
    /// exception dead-letters its event and the runner goes on; a retired generation's refusal stops the runner.
    /// </summary>
    public sealed class FailingSummaries : Projection
    {
        public const string Secret = "Host=db.internal;Password=hunter2";

        public FailingSummaries()
            : base("http-health-failing")
        {
            On<OrderPlaced>((_, _, _) => throw new ReadModelGenerationRetiredException(Secret, 1, 2));
        }
    }

    /// <summary>An election this node never wins: its projections never run here, so they fall behind.</summary>
    private sealed class NeverLeader : ILeaderElection
    {
        public ValueTask<LeaderLease?> TryAcquireAsync(string resource, CancellationToken cancellationToken = default) => ValueTask.FromResult<LeaderLease?>(null);
    }

    /// <summary>An event store whose database is gone: every call throws.</summary>
    public class UnreachableStore : DispatchProxy
    {
        protected override object? Invoke(MethodInfo? targetMethod, object?[]? args) => throw new IOException("connection refused");
    }

    /// <summary>An event store whose database hangs: every call waits forever, deaf to cancellation (a driver blocked in a synchronous wait).</summary>
    public class HangingStore : DispatchProxy
    {
        protected override object? Invoke(MethodInfo? targetMethod, object?[]? args) =>
            targetMethod?.ReturnType == typeof(ValueTask<long>)
                ? new ValueTask<long>(new TaskCompletionSource<long>().Task)
                : throw new NotSupportedException(targetMethod?.Name);
    }

    private static Task<TestApp> StartAsync(Action<HeraldHealthOptions>? health = null, Action<IServiceCollection>? services = null, bool projections = false) =>
        TestApp.StartAsync(
            app => app.MapHeraldHealth(),
            h =>
            {
                if (projections)
                {
                    h.AddProjection(new OrderSummaries());
                }
            },
            s =>
            {
                s.AddHealthChecks().AddHerald(health);
                services?.Invoke(s);
            });

    private static async Task<(HttpStatusCode Status, JsonElement Body)> HealthAsync(TestApp app)
    {
        var response = await app.Client.GetAsync("/health");
        return (response.StatusCode, await response.Content.ReadFromJsonAsync<JsonElement>());
    }

    private static void AssertEventStoreUnhealthy((HttpStatusCode Status, JsonElement Body) health, string description)
    {
        Assert.Equal(HttpStatusCode.ServiceUnavailable, health.Status);
        var check = health.Body.GetProperty("checks").GetProperty("herald-event-store");
        Assert.Equal("Unhealthy", check.GetProperty("status").GetString());
        Assert.Contains(description, check.GetProperty("description").GetString(), StringComparison.Ordinal);
    }

    private static async Task AppendAsync(TestApp app, int count)
    {
        var envelopes = app.Services.GetRequiredService<EnvelopeFactory>();
        var store = app.Services.GetRequiredService<IEventStore>();
        for (var i = 0; i < count; i++)
        {
            var id = $"h-{i}";
            await store.AppendAsync(StreamName.For("order", id), ExpectedVersion.Any, [envelopes.Create(new OrderPlaced(id, 1))]);
        }
    }

    [Fact]
    public async Task HealthEndpoint_ReportsEveryHeraldCheck_WithItsStatusDescriptionAndData()
    {
        await using var app = await StartAsync();
        await AppendAsync(app, 2);

        var (status, body) = await HealthAsync(app);

        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("Healthy", body.GetProperty("status").GetString());
        var checks = body.GetProperty("checks");
        Assert.Equal(
            ["herald-dead-letters", "herald-event-store", "herald-projections", "herald-servers", "herald-transport"],
            checks.EnumerateObject().Select(c => c.Name).Order(StringComparer.Ordinal));
        foreach (var check in checks.EnumerateObject())
        {
            Assert.Equal("Healthy", check.Value.GetProperty("status").GetString());
            Assert.False(string.IsNullOrEmpty(check.Value.GetProperty("description").GetString()));
        }

        Assert.Equal(2, checks.GetProperty("herald-event-store").GetProperty("data").GetProperty("headPosition").GetInt64());
        Assert.Equal("in-memory", checks.GetProperty("herald-transport").GetProperty("data").GetProperty("transport").GetString());
        Assert.Equal(0, checks.GetProperty("herald-dead-letters").GetProperty("data").GetProperty("total").GetInt64());
    }

    [Fact]
    public async Task RedisStoresWithRedisDown_AreUnhealthy_AndWithRedisUp_Healthy()
    {
        // A port nobody listens on: taken from the system, then released.
        var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var unused = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();

        // Redis down after the start (given multiplexers are not connected at start): the idempotency store and inbox fail.
        using var down = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(
            new StackExchange.Redis.ConfigurationOptions { EndPoints = { { "127.0.0.1", unused } }, AbortOnConnectFail = false, ConnectTimeout = 500 });
        await using (var app = await TestApp.StartAsync(a => a.MapHeraldHealth(), h => h.UseRedis(down), s => s.AddHealthChecks().AddHerald(o => o.Timeout = TimeSpan.FromSeconds(2))))
        {
            var (status, body) = await HealthAsync(app);

            Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
            var check = body.GetProperty("checks").GetProperty("herald-servers");
            Assert.Equal("Unhealthy", check.GetProperty("status").GetString());
            Assert.Contains($"127.0.0.1:{unused}", check.GetProperty("description").GetString(), StringComparison.Ordinal);
        }

        var redis = TestServers.Redis;
        await using (var app = await TestApp.StartAsync(a => a.MapHeraldHealth(), h => h.UseRedis(redis), s => s.AddHealthChecks().AddHerald()))
        {
            var (status, body) = await HealthAsync(app);

            Assert.Equal(HttpStatusCode.OK, status);
            var check = body.GetProperty("checks").GetProperty("herald-servers");
            Assert.Equal("Healthy", check.GetProperty("status").GetString());
            Assert.Equal("Healthy", check.GetProperty("data").EnumerateObject().Single().Value.GetString());
        }
    }

    /// <summary>Answers only once every probe of its group has been asked: probed one after another, the first never answers.</summary>
    private sealed class RendezvousProbe(string name, CountdownEvent asked) : Herald.Internal.IServerProbe
    {
        public string Name => name;

        public async ValueTask ProbeAsync(CancellationToken cancellationToken)
        {
            asked.Signal();
            await Task.Run(() => asked.Wait(cancellationToken), cancellationToken);
        }
    }

    [Fact]
    public async Task ServersCheck_ProbesEveryServerSideBySide_SoOneSlowServerCostsOneTimeoutNotOneEach()
    {
        using var asked = new CountdownEvent(2);
        await using var app = await TestApp.StartAsync(
            a => a.MapHeraldHealth(),
            h => { },
            s =>
            {
                s.AddSingleton<Herald.Internal.IServerProbe>(new RendezvousProbe("first", asked));
                s.AddSingleton<Herald.Internal.IServerProbe>(new RendezvousProbe("second", asked));
                s.AddHealthChecks().AddHerald(o => o.Timeout = TimeSpan.FromSeconds(5));
            });

        var (_, body) = await HealthAsync(app);

        var check = body.GetProperty("checks").GetProperty("herald-servers");
        Assert.Equal("Healthy", check.GetProperty("status").GetString());
        Assert.Equal(["first", "second"], check.GetProperty("data").EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task HostThatDoesNotConsume_ReportsItsTransportWithoutProbingIt()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapHeraldHealth("/status"),
            h => h.Configure(o => o.StartConsumer = false),
            s => s.AddHealthChecks().AddHerald());

        var body = await (await app.Client.GetAsync("/status")).Content.ReadFromJsonAsync<JsonElement>();

        var check = body.GetProperty("checks").GetProperty("herald-transport");
        Assert.Equal("Healthy", check.GetProperty("status").GetString());
        Assert.False(check.GetProperty("data").GetProperty("consumer").GetBoolean());
        Assert.Contains("does not probe", check.GetProperty("description").GetString(), StringComparison.Ordinal);
    }

    /// <summary>
    /// A time setting too long passed the start and failed every check: Timeout in the probe's CancelAfter, DeadLetterWindow
    /// taken from the time of day.
    /// </summary>
    [Theory]
    [InlineData(nameof(HeraldHealthOptions.Timeout))]
    [InlineData(nameof(HeraldHealthOptions.DeadLetterWindow))]
    public async Task ATimeSettingTooLongToWaitOrAddToADate_FailsTheStartNamingIt(string setting)
    {
        var failure = await Assert.ThrowsAnyAsync<Microsoft.Extensions.Options.OptionsValidationException>(
            () => StartAsync(health: o => typeof(HeraldHealthOptions).GetProperty(setting)!.SetValue(o, TimeSpan.MaxValue)));

        Assert.Contains(failure.Failures, f => f.Contains(setting, StringComparison.Ordinal));
    }

    [Fact]
    public async Task NegativeThreshold_FailsAtStart()
    {
        var failure = await Assert.ThrowsAnyAsync<Microsoft.Extensions.Options.OptionsValidationException>(() => StartAsync(health: o => o.MaxProjectionLag = -1));

        Assert.Contains("MaxProjectionLag", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UnreachableEventStore_IsUnhealthy_And503()
    {
        await using var app = await StartAsync(services: s => s.Replace(ServiceDescriptor.Singleton(DispatchProxy.Create<IEventStore, UnreachableStore>())));

        AssertEventStoreUnhealthy(await HealthAsync(app), "IOException");
    }

    [Fact]
    public async Task EventStoreThatHangsDeafToCancellation_IsUnhealthy_WithinTheTimeout()
    {
        await using var app = await StartAsync(
            health: o => o.Timeout = TimeSpan.FromMilliseconds(200),
            services: s => s.Replace(ServiceDescriptor.Singleton(DispatchProxy.Create<IEventStore, HangingStore>())));

        // Bounded here so that a check waiting forever fails the test instead of hanging it.
        AssertEventStoreUnhealthy(await HealthAsync(app).WaitAsync(TimeSpan.FromSeconds(30)), "did not answer within 0.2 s");
    }

    [Fact]
    public async Task CheckReportingANonFiniteNumber_IsStillReported_NotA500()
    {
        await using var app = await StartAsync(services: s => s.AddHealthChecks().AddCheck(
            "ratio",
            () => HealthCheckResult.Unhealthy("no samples", data: new Dictionary<string, object> { ["ratio"] = double.NaN, ["rate"] = float.PositiveInfinity })));

        var (status, body) = await HealthAsync(app);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        var data = body.GetProperty("checks").GetProperty("ratio").GetProperty("data");
        Assert.Equal("NaN", data.GetProperty("ratio").GetString());
        Assert.Equal("Infinity", data.GetProperty("rate").GetString());
    }

    [Fact]
    public async Task ProjectionBehindTheHeadByMoreThanTheThreshold_IsDegraded_WithItsLag()
    {
        await using var app = await StartAsync(
            health: o => o.MaxProjectionLag = 2,
            services: s => s.AddSingleton<ILeaderElection, NeverLeader>(),
            projections: true);
        await AppendAsync(app, 3);

        var (status, body) = await HealthAsync(app);

        Assert.Equal(HttpStatusCode.OK, status);
        var check = body.GetProperty("checks").GetProperty("herald-projections");
        Assert.Equal("Degraded", check.GetProperty("status").GetString());
        Assert.Equal(3, check.GetProperty("data").GetProperty("http-health-orders.lag").GetInt64());
        Assert.Contains("http-health-orders", check.GetProperty("description").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ProjectionStalledOnAFailure_IsDegraded_WithoutTheFailuresTextOnTheOpenEndpoint()
    {
        // The health endpoint is often open to anyone (load balancers, probes); a failure's message may name hosts,
        // credentials or data, so it goes to the log, as the other checks give only an exception's type.
        await using var app = await TestApp.StartAsync(
            app => app.MapHeraldHealth(),
            h => h.AddProjection(new FailingSummaries()),
            s => s.AddHealthChecks().AddHerald());
        await AppendAsync(app, 1);

        string? description;
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        JsonElement check;
        while (true)
        {
            var (_, body) = await HealthAsync(app);
            check = body.GetProperty("checks").GetProperty("herald-projections");
            description = check.GetProperty("description").GetString();
            if (check.GetProperty("data").GetProperty("http-health-failing.stalled").GetBoolean())
            {
                break;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(50), deadline.Token);
        }

        Assert.Equal("Degraded", check.GetProperty("status").GetString());
        Assert.Contains("'http-health-failing' is stalled", description, StringComparison.Ordinal);
        Assert.DoesNotContain("hunter2", description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ProjectionWithinTheThreshold_IsHealthy()
    {
        await using var app = await StartAsync(
            health: o => o.MaxProjectionLag = 5,
            services: s => s.AddSingleton<ILeaderElection, NeverLeader>(),
            projections: true);
        await AppendAsync(app, 3);

        var (_, body) = await HealthAsync(app);

        Assert.Equal("Healthy", body.GetProperty("checks").GetProperty("herald-projections").GetProperty("status").GetString());
    }

    [Fact]
    public async Task DeadLettersGrowingFasterThanAllowed_AreDegraded_AndOldOnesDoNotCount()
    {
        await using var app = await StartAsync(health: o =>
        {
            o.MaxDeadLetterGrowth = 2;
            o.DeadLetterWindow = TimeSpan.FromMinutes(5);
        });
        var now = DateTimeOffset.UtcNow;
        await AddDeadLetterAsync(app, now - TimeSpan.FromHours(1));
        await AddDeadLetterAsync(app, now - TimeSpan.FromHours(1));
        await AddDeadLetterAsync(app, now - TimeSpan.FromHours(1));
        await AddDeadLetterAsync(app, now);
        await AddDeadLetterAsync(app, now);

        var (_, healthy) = await HealthAsync(app);
        await AddDeadLetterAsync(app, now);
        var (_, degraded) = await HealthAsync(app);

        var before = healthy.GetProperty("checks").GetProperty("herald-dead-letters");
        Assert.Equal("Healthy", before.GetProperty("status").GetString());
        Assert.Equal(2, before.GetProperty("data").GetProperty("recent").GetInt64());
        var after = degraded.GetProperty("checks").GetProperty("herald-dead-letters");
        Assert.Equal("Degraded", after.GetProperty("status").GetString());
        Assert.Equal(3, after.GetProperty("data").GetProperty("recent").GetInt64());
        Assert.Equal(6, after.GetProperty("data").GetProperty("total").GetInt64());
        Assert.Equal("Degraded", degraded.GetProperty("status").GetString());
    }

    private static ValueTask<bool> AddDeadLetterAsync(TestApp app, DateTimeOffset failedAt)
    {
        var envelope = app.Services.GetRequiredService<EnvelopeFactory>().Create(new OrderNoted("dead"));
        return app.Services.GetRequiredService<IDeadLetterStore>().AddAsync(new DeadLetter
        {
            Id = Guid.CreateVersion7(),
            Envelope = envelope,
            Endpoint = "herald",
            Cause = DeadLetterCause.RetriesExhausted,
            ErrorType = "System.InvalidOperationException",
            ErrorMessage = "failed",
            Fingerprint = "f",
            FirstFailureTime = failedAt,
            LastFailureTime = failedAt,
        });
    }

    /// <summary>
    /// A consumer whose loop ended on its own (the endpoint no longer consumes) left /health Healthy: the host could not
    /// see it. In-memory consumers have no failure to inject, so this one's loop is made to die by the test.
    /// </summary>
    [Fact]
    public async Task ConsumerThatStoppedOnItsOwn_IsUnhealthy_NamingItsQueueAndTheReason_And503()
    {
        var transport = new DyingTransport();
        await using var app = await TestApp.StartAsync(
            a => a.MapHeraldHealth(),
            services: s => s.AddHealthChecks().AddHerald(),
            servicesAfterHerald: s => s.AddSingleton<ITransport>(transport));
        Assert.Equal(HttpStatusCode.OK, (await HealthAsync(app)).Status);
        var consumer = Assert.Single(transport.Consumers);

        await consumer.DieAsync(new NotSupportedException("the loop failed"));

        // The host learns of it from the consumer's completion, on another thread: polled up to a deadline.
        var (status, body) = (HttpStatusCode.OK, default(JsonElement));
        await Herald.Conformance.Eventually.UntilAsync(
            async () =>
            {
                (status, body) = await HealthAsync(app);
                return status != HttpStatusCode.OK;
            },
            "/health reports the consumer that stopped",
            TimeSpan.FromSeconds(15));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        var check = body.GetProperty("checks").GetProperty("herald-transport");
        Assert.Equal("Unhealthy", check.GetProperty("status").GetString());
        var description = check.GetProperty("description").GetString();
        Assert.Contains($"'{consumer.Queue}'", description, StringComparison.Ordinal);
        Assert.Contains(nameof(NotSupportedException), description, StringComparison.Ordinal);
        Assert.Equal(consumer.Queue, check.GetProperty("data").GetProperty("stoppedQueue").GetString());
    }

    /// <summary>The in-memory transport, whose consumers' loops the test can end as a failure would.</summary>
    private sealed class DyingTransport() : DelegatingTransport(new InMemoryTransport())
    {
        public ConcurrentBag<DyingConsumer> Consumers { get; } = [];

        public override async ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default)
        {
            var consumer = new DyingConsumer(await base.ConsumeAsync(queue, options, handler, cancellationToken));
            Consumers.Add(consumer);
            return consumer;
        }
    }

    private sealed class DyingConsumer(ITransportConsumer inner) : ITransportConsumer, IConsumerCompletion
    {
        private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string Queue => inner.Queue;

        public Task Completion => _completion.Task;

        // The loop stops taking deliveries, then tells why.
        public async Task DieAsync(Exception reason)
        {
            await inner.StopAsync();
            _completion.SetException(reason);
        }

        public async Task StopAsync(CancellationToken cancellationToken = default)
        {
            await inner.StopAsync(cancellationToken);
            _completion.TrySetResult();
        }

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
