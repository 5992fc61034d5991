using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Handling;
using Herald.Nats.Transport;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.Nats.Tests;

public sealed class HostingTests : NatsTestBase
{
    [Fact]
    public async Task UseNats_PublishedMessage_ReachesTheHandlerThroughJetStream()
    {
        var probe = new Probe();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(probe);
        builder.Services.AddHerald(h => h
            .UseNats(o =>
            {
                o.Url = NatsServer.Url;
                o.StreamPrefix = Prefixes.Streams;
                o.SubjectPrefix = Prefixes.Subjects;
            })
            .AddMessageType<NatsPing>("nats-ping")
            .AddHandler<NatsPingHandler>()
            .Configure(o =>
            {
                o.EndpointName = "endpoint";
                o.MaxConcurrency = 2;
            }));
        using var host = builder.Build();
        await host.StartAsync();
        try
        {
            Assert.Equal("nats", host.Services.GetRequiredService<ITransport>().Name);
            await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new NatsPing("hello"));
            await Eventually.UntilAsync(() => probe.Seen.Contains("hello"), "the handler got the message");
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task UseNats_WithInvalidOptions_FailsTheHostStartListingTheProblems()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h.UseNats(o =>
        {
            o.Url = "http://localhost:4222";
            o.SubjectPrefix = "two.tokens";
            o.AckWait = TimeSpan.Zero;
            o.TopicStream.Retention = NatsRetention.Interest;
            o.QueueStream.MaxAge = TimeSpan.FromSeconds(30);
            o.QueueStream.DuplicateWindow = TimeSpan.FromMinutes(2);
            o.Queues["q"] = new NatsQueueOptions { Stream = "EVENTS", FilterSubject = "events.*" };
        }));
        using var host = builder.Build();
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains(error.Failures, f => f.Contains("Url", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.Contains("SubjectPrefix", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.Contains("AckWait", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.Contains("SendSubject", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.Contains("TopicStream.Retention", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.Contains("QueueStream.DuplicateWindow", StringComparison.Ordinal));
    }

    /// <summary>A LagRefreshInterval too long for a timer passed validation and made every consumer's start throw (its lag timer).</summary>
    [Theory]
    [InlineData(nameof(NatsTransportOptions.LagRefreshInterval))]
    public void ATimeSettingTooLongToWaitOn_FailsTheValidationNamingIt(string setting)
    {
        var options = new NatsTransportOptions();
        typeof(NatsTransportOptions).GetProperty(setting)!.SetValue(options, TimeSpan.MaxValue);

        var problem = Assert.Single(options.Validate());
        Assert.Contains(setting, problem, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UseNats_WithUnreachableServer_FailsTheHostStartNamingTheServer()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h
            .UseNats(o => o.Url = "nats://127.0.0.1:1")
            .Configure(o => o.StartConsumer = false));
        using var host = builder.Build();
        var error = await Assert.ThrowsAsync<HeraldException>(() => host.StartAsync());
        Assert.Contains("127.0.0.1:1", error.Message, StringComparison.Ordinal);
    }

    public sealed record NatsPing(string Text);

    public sealed class Probe
    {
        public ConcurrentBag<string> Seen { get; } = [];
    }

    public sealed class NatsPingHandler(Probe probe) : IMessageHandler<NatsPing>
    {
        public ValueTask HandleAsync(NatsPing message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Seen.Add(message.Text);
            return ValueTask.CompletedTask;
        }
    }
}
