using Herald.RabbitMQ.Transport;
using System.Collections.Concurrent;
using Herald.Handling;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Herald.RabbitMQ.Tests;

public sealed class HostingTests : RabbitMqTestBase
{
    [Fact]
    public async Task UseRabbitMq_PublishedMessage_ReachesTheHandlerThroughTheBroker()
    {
        var probe = new Probe();
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton(probe);
        builder.Services.AddHerald(h => h
            .UseRabbitMq(o =>
            {
                o.ConnectionUri = BrokerAdmin.AmqpUri;
                o.ClientProvidedName = Prefix;
            })
            .AddMessageType<RabbitPing>(Name("ping"))
            .AddHandler<RabbitPingHandler>()
            .Configure(o =>
            {
                o.EndpointName = Name("endpoint");
                o.MaxConcurrency = 2;
            }));
        using var host = builder.Build();
        await host.StartAsync();
        try
        {
            Assert.Equal("rabbitmq", host.Services.GetRequiredService<ITransport>().Name);
            await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new RabbitPing("hello"));
            await Herald.Conformance.Eventually.UntilAsync(() => probe.Seen.Contains("hello"), "the handler got the message");
        }
        finally
        {
            await host.StopAsync();
        }
    }

    /// <summary>
    /// The endpoint's consumer stopped for good (its queue deleted, and the resume failing on an unexpected exception, not
    /// a broker failure it tries again; the test hook throws one) while the health check kept reporting the transport Healthy: nothing consumed.
    /// </summary>
    [Fact]
    public async Task ConsumerThatStoppedOnItsOwn_MakesTheTransportCheckUnhealthy_NamingItsQueueAndTheReason()
    {
        var endpoint = Name("endpoint");
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton(new Probe());
        builder.Services.AddHerald(h => h
            .UseRabbitMq(o =>
            {
                o.ConnectionUri = BrokerAdmin.AmqpUri;
                o.ClientProvidedName = Prefix;
                o.NetworkRecoveryInterval = TimeSpan.FromMilliseconds(100);
            })
            .AddMessageType<RabbitPing>(Name("ping"))
            .AddHandler<RabbitPingHandler>()
            .Configure(o => o.EndpointName = endpoint));
        builder.Services.AddHealthChecks().AddHerald();
        using var host = builder.Build();
        await host.StartAsync();
        try
        {
            var health = host.Services.GetRequiredService<HealthCheckService>();
            Assert.Equal(HealthStatus.Healthy, (await health.CheckHealthAsync()).Entries["herald-transport"].Status);
            var resumed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            ((RabbitMqTransport)host.Services.GetRequiredService<ITransport>()).QueueRestoredForTests = _ =>
            {
                resumed.TrySetResult();
                throw new NotSupportedException("injected: the resume failed");
            };

            await BrokerAdmin.DeleteAllAsync(endpoint);
            await resumed.Task.WaitAsync(TimeSpan.FromSeconds(15));

            var report = await Herald.Conformance.Eventually.ValueAsync<HealthReport>(
                async () =>
                {
                    var r = await health.CheckHealthAsync();
                    return r.Entries["herald-transport"].Status == HealthStatus.Unhealthy ? r : null;
                },
                "the transport check reports the stopped consumer");
            var entry = report.Entries["herald-transport"];
            Assert.Contains($"'{endpoint}'", entry.Description, StringComparison.Ordinal);
            Assert.Contains(nameof(NotSupportedException), entry.Description, StringComparison.Ordinal);
            Assert.IsType<NotSupportedException>(entry.Exception);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task UseRabbitMq_WithUnreachableBroker_FailsTheHostStartNamingTheHost()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h
            .UseRabbitMq(o =>
            {
                o.ConnectionUri = new Uri("amqp://guest:guest@127.0.0.1:1/");
                o.ClientProvidedName = Prefix;
            })
            .Configure(o => o.StartConsumer = false));
        using var host = builder.Build();
        var error = await Assert.ThrowsAsync<HeraldException>(() => host.StartAsync());
        Assert.Contains("127.0.0.1:1", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UseRabbitMq_WithInvalidOptions_FailsTheHostStartListingTheProblems()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h.UseRabbitMq(o =>
        {
            o.PublisherChannels = 0;
            o.Prefetch = 70_000;
        }));
        using var host = builder.Build();
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains(error.Failures, f => f.Contains("PublisherChannels", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.Contains("Prefetch", StringComparison.Ordinal));
    }

    /// <summary>
    /// A time setting too long to wait on passed validation and threw where it was waited on: NetworkRecoveryInterval's
    /// Task.Delay between a consumer's resume attempts ended its recovery. GaugeRefreshInterval is only compared with an
    /// age, so its MaxValue (read once) stays accepted.
    /// </summary>
    [Theory]
    [InlineData(nameof(RabbitMqTransportOptions.NetworkRecoveryInterval))]
    public void ATimeSettingTooLongToWaitOn_FailsTheValidationNamingIt(string setting)
    {
        var options = new RabbitMqTransportOptions { ConnectionUri = new Uri("amqp://herald:secret@127.0.0.1:5672/"), GaugeRefreshInterval = TimeSpan.MaxValue };
        typeof(RabbitMqTransportOptions).GetProperty(setting)!.SetValue(options, TimeSpan.MaxValue);

        var problem = Assert.Single(options.Validate());
        Assert.Contains(setting, problem, StringComparison.Ordinal);
    }

    // Stop 40: MaxDeliveries (quorum queues' delivery limit) is off with null, else at least 1; 10 by default.
    [Theory]
    [InlineData(0, true)]
    [InlineData(-1, true)]
    [InlineData(1, false)]
    [InlineData(null, false)]
    public void MaxDeliveries_BelowOne_FailsTheValidationNamingIt(int? maxDeliveries, bool invalid)
    {
        var options = new RabbitMqTransportOptions { ConnectionUri = new Uri("amqp://herald:secret@127.0.0.1:5672/") };
        Assert.Equal(10, options.MaxDeliveries);
        options.MaxDeliveries = maxDeliveries;

        var problems = options.Validate();
        Assert.Equal(invalid, problems.Any(p => p.Contains(nameof(RabbitMqTransportOptions.MaxDeliveries), StringComparison.Ordinal)));
        Assert.Equal(invalid ? 1 : 0, problems.Count);
    }

    [Fact]
    public async Task Factory_WithInvalidOptions_Throws()
    {
        var error = await Assert.ThrowsAsync<ArgumentException>(() => RabbitMqTransportFactory.CreateAsync(new RabbitMqTransportOptions { ConnectionUri = new Uri("http://localhost/") }));
        Assert.Contains("amqp://", error.Message, StringComparison.Ordinal);
    }

    public sealed record RabbitPing(string Text);

    public sealed class Probe
    {
        public ConcurrentBag<string> Seen { get; } = [];
    }

    public sealed class RabbitPingHandler(Probe probe) : IMessageHandler<RabbitPing>
    {
        public ValueTask HandleAsync(RabbitPing message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Seen.Add(message.Text);
            return ValueTask.CompletedTask;
        }
    }
}
