using Herald.Conformance.Transport;
using System.Collections.Concurrent;
using System.Text;
using Herald.Handling;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Conformance;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Tests.Handling;

public sealed class HandlingTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Publish_ToHandledType_RunsEveryHandlerOfTheType()
    {
        var probe = new Probe();
        using var host = await StartAsync(probe, h => h.AddHandler<PingHandler>().AddHandler<SecondPingHandler>());

        await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new Ping("a"));

        await probe.WaitAsync(2);
        Assert.Contains("ping:a", probe.Seen);
        Assert.Contains("second:a", probe.Seen);
    }

    [Fact]
    public async Task Send_FromHandler_CarriesCorrelationAndSetsCausationToIncomingId()
    {
        var probe = new Probe();
        using var host = await StartAsync(probe, h => h.AddHandler<ForwardingHandler>().AddHandler<PongHandler>());
        var correlation = "flow-42";

        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Ping("b"), new DeliveryOptions { CorrelationId = correlation, UserId = "ann" });

        await probe.WaitAsync(2);
        var ping = probe.Envelopes.Single(e => e.MessageType == "test-ping");
        var pong = probe.Envelopes.Single(e => e.MessageType == "test-pong");
        Assert.Equal(correlation, ping.CorrelationId);
        Assert.Equal(correlation, pong.CorrelationId);
        Assert.Equal(ping.MessageId.ToString(), pong.CausationId);
        Assert.Null(pong.UserId);
    }

    // Issue 9: a singleton handler was not the ambient unit of work, so what it sent through an injected IMessageBus carried
    // neither the incoming correlation nor the incoming id as its cause (a scoped handler's did).
    [Theory]
    [InlineData(ServiceLifetime.Singleton)]
    [InlineData(ServiceLifetime.Scoped)]
    public async Task Send_ThroughAnInjectedBus_FromAHandlerOfAnyLifetime_FollowsTheIncomingMessage_Issue9(ServiceLifetime lifetime)
    {
        var probe = new Probe();
        using var host = await StartAsync(probe, h => h.AddHandler<BusForwardingHandler>(lifetime).AddHandler<PongHandler>());

        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Ping("bus"), new DeliveryOptions { CorrelationId = "flow-9" });

        await probe.WaitAsync(2);
        var ping = probe.Envelopes.Single(e => e.MessageType == "test-ping");
        var pong = probe.Envelopes.Single(e => e.MessageType == "test-pong");
        Assert.Equal("flow-9", pong.CorrelationId);
        Assert.Equal(ping.MessageId.ToString(), pong.CausationId);
    }

    // Issue 10: the wire's user id was trusted and copied into every message a handler sent.
    [Fact]
    public async Task ClaimedUserId_IsNotTrustedByDefault_SoAHandlersMessagesDoNotCarryIt_Issue10()
    {
        var probe = new Probe();
        using var host = await StartAsync(probe, h => h.AddHandler<UserRecordingHandler>().AddHandler<PongHandler>());

        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Ping("claim"), new DeliveryOptions { UserId = "mallory" });

        await probe.WaitAsync(2);
        Assert.Contains("claimed:mallory user:", probe.Seen);
        Assert.Null(probe.Envelopes.Single(e => e.MessageType == "test-pong").UserId);
    }

    [Fact]
    public async Task ClaimedUserId_TheAuthenticatorVouchesFor_IsTheContextsUser_AndCarriedByItsMessages_Issue10()
    {
        var probe = new Probe();
        using var host = await StartAsync(probe, h => h.AddHandler<UserRecordingHandler>().AddHandler<PongHandler>().UseMessageAuthenticator<AnnOnly>());
        var bus = host.Services.GetRequiredService<IMessageBus>();

        await bus.SendAsync(new Ping("ann"), new DeliveryOptions { UserId = "ann" });
        await probe.WaitAsync(2);
        await bus.SendAsync(new Ping("eve"), new DeliveryOptions { UserId = "eve" });
        await probe.WaitAsync(4);

        Assert.Contains("claimed:ann user:ann", probe.Seen);
        Assert.Contains("claimed:eve user:", probe.Seen);
        var pongs = probe.Envelopes.Where(e => e.MessageType == "test-pong").Select(e => e.UserId).ToList();
        Assert.Equal(2, pongs.Count);
        Assert.Contains("ann", pongs);
        Assert.Contains(null, pongs);
    }

    /// <summary>Trusts the claim of user "ann" only, as a check of a signed header would.</summary>
    public sealed class AnnOnly : IMessageAuthenticator
    {
        public ValueTask<string?> AuthenticateAsync(Envelope envelope, CancellationToken cancellationToken) =>
            new(envelope.UserId == "ann" ? "ann" : null);
    }

    public sealed class UserRecordingHandler(Probe probe) : IMessageHandler<Ping>
    {
        public async ValueTask HandleAsync(Ping message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Add($"claimed:{context.ClaimedUserId} user:{context.UserId}", context.Envelope);
            await context.SendAsync(new Pong(message.Text), cancellationToken: cancellationToken);
        }
    }

    [Fact]
    public async Task Publish_WithoutCorrelation_StartsAFlowWithTheMessageId()
    {
        var probe = new Probe();
        using var host = await StartAsync(probe, h => h.AddHandler<PingHandler>());

        await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new Ping("c"));

        await probe.WaitAsync(1);
        var envelope = Assert.Single(probe.Envelopes);
        Assert.Equal(envelope.MessageId.ToString(), envelope.CorrelationId);
        Assert.Equal(7, envelope.MessageId.Version);
    }

    [Fact]
    public async Task Publish_UnregisteredType_ThrowsNamingTheType()
    {
        using var host = await StartAsync(new Probe(), h => h.AddHandler<PingHandler>());
        var bus = host.Services.GetRequiredService<IMessageBus>();

        var ex = await Assert.ThrowsAsync<MessageTypeNotRegisteredException>(async () => await bus.PublishAsync(new Unregistered(1)));
        Assert.Contains(nameof(Unregistered), ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Middleware_RunsAroundHandlersInRegistrationOrder()
    {
        var probe = new Probe();
        using var host = await StartAsync(probe, h => h.AddHandler<PingHandler>().UseMiddleware<OuterMiddleware>().UseMiddleware<InnerMiddleware>());

        await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new Ping("d"));

        await probe.WaitAsync(3);
        Assert.Equal(["outer", "inner", "ping:d"], probe.Seen.Take(3));
    }

    [Fact]
    public async Task Handler_FailingTwice_IsRedeliveredAndSucceedsOnTheThirdAttempt()
    {
        var probe = new Probe();
        using var host = await StartAsync(probe, h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton));

        await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new Flaky(2));

        await probe.WaitAsync(1);
        Assert.Equal(3, Assert.Single(probe.Envelopes).DeliveryAttempt);
    }

    [Fact]
    public async Task Handler_AlwaysFailing_IsDeadLetteredAfterMaxAttemptsWithTheReason()
    {
        var probe = new Probe();
        using var host = await StartAsync(probe, h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton));
        var transport = (InMemoryTransport)host.Services.GetRequiredService<ITransport>();

        await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new Flaky(int.MaxValue));

        var deadLetter = await WaitForDeadLetterAsync(host);
        Assert.Equal(3, deadLetter.Envelope.DeliveryAttempt);
        Assert.Equal(3, deadLetter.AttemptCount);
        Assert.Equal(DeadLetterCause.RetriesExhausted, deadLetter.Cause);
        Assert.Equal(typeof(InvalidOperationException).FullName, deadLetter.ErrorType);
        Assert.Equal(3, probe.Attempts);
        Assert.Empty(transport.GetDeadLetters("tests"));
    }

    // A failed attempt's writes are rolled back, but the message object it was handed was the one its retry got: a handler
    // that changed it (added a line, applied a discount) before failing ran again on its own change. Each run in the same
    // delivery (an immediate retry, a run again after a version conflict) now gets the message as it was delivered.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ARetryInTheSameDelivery_GetsTheMessageAsDelivered_NotAsTheFailedAttemptLeftIt(bool conflict)
    {
        var probe = new Probe();
        using var host = await StartAsync(probe, h => h
            .AddHandler<BasketHandler>(ServiceLifetime.Singleton)
            .ConfigureRetries<Basket>(r => r.Immediate(conflict ? 0 : 1)));

        await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new Basket { Lines = ["apple"], FailWithConflict = conflict });

        await probe.WaitAsync(2);
        Assert.Equal(["apple", "apple"], probe.Seen);
        Assert.All(probe.Envelopes, e => Assert.Equal(1, e.DeliveryAttempt));
    }

    [Fact]
    public async Task UnknownMessageType_Arriving_IsDeadLetteredAtOnceWithTheName()
    {
        using var host = await StartAsync(new Probe(), h => h.AddHandler<PingHandler>());
        var transport = (InMemoryTransport)host.Services.GetRequiredService<ITransport>();

        await transport.SendAsync("tests", RawEnvelope("who-knows", "{}"));

        var deadLetter = await WaitForDeadLetterAsync(host);
        Assert.Equal(1, deadLetter.Envelope.DeliveryAttempt);
        Assert.Equal(DeadLetterCause.UnknownMessageType, deadLetter.Cause);
        Assert.Contains("who-knows", deadLetter.ErrorMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UndecodableBody_IsDeadLetteredAtOnceAndTheConsumerGoesOn()
    {
        var probe = new Probe();
        using var host = await StartAsync(probe, h => h.AddHandler<PingHandler>());
        var transport = (InMemoryTransport)host.Services.GetRequiredService<ITransport>();

        await transport.SendAsync("tests", RawEnvelope("test-ping", "{not json"));
        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Ping("after"));

        var deadLetter = await WaitForDeadLetterAsync(host);
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.Contains("could not be decoded", deadLetter.ErrorMessage, StringComparison.Ordinal);
        await probe.WaitAsync(1);
        Assert.Equal("ping:after", Assert.Single(probe.Seen));
    }

    [Fact]
    public async Task RegisteredTypeWithoutHandler_IsDeadLetteredAsNoHandler()
    {
        using var host = await StartAsync(new Probe(), h => h.AddHandler<PingHandler>().AddMessageType<Pong>());

        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Pong("x"));

        var deadLetter = await WaitForDeadLetterAsync(host);
        Assert.Equal(DeadLetterCause.NoHandler, deadLetter.Cause);
        Assert.Contains("NoHandler", deadLetter.ErrorMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UnroutedSend_OfATypeWithoutHandler_IsDeadLetteredWithAReasonSayingToRouteItOrHandleIt()
    {
        // The README's quick start sends a reply from a handler with no route: it lands on the sender's own endpoint,
        // and the dead letter must say both ways out, not only "register a handler".
        using var host = await StartAsync(new Probe(), h => h.AddHandler<PingHandler>().AddMessageType<Pong>());

        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Pong("x"));

        var deadLetter = await WaitForDeadLetterAsync(host);
        Assert.Contains("IMessageHandler<Pong>", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Contains("h.Route<Pong>(\"queue\")", deadLetter.ErrorMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Stop_WaitsForTheMessageInFlight()
    {
        var probe = new Probe();
        var host = await StartAsync(probe, h => h.AddHandler<GatedHandler>(ServiceLifetime.Singleton));
        var gate = host.Services.GetRequiredService<Gate>();

        await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new Gated(1));
        await gate.Entered.Task.WaitAsync(Deadline);
        var stopping = host.StopAsync();
        Assert.False(stopping.IsCompleted);
        gate.Release.SetResult();
        await stopping.WaitAsync(Deadline);
        host.Dispose();

        Assert.Equal(["gated:1"], probe.Seen);
    }

    [Fact]
    public async Task TheHostedConsumer_StartedTwiceAndStoppedTwice_RunsOneConsumer_WhichTheStopStops()
    {
        // A second start ran a second consumer beside the first and the stop reached only the second: the first went on
        // taking messages after the host stopped, and its handlers were cut off without grace when the host was disposed.
        var transport = new CountingTransport(new InMemoryTransport());
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(new Probe());
        builder.Services.AddHerald(h => h.AddHandler<PingHandler>().UseTransport(_ => transport).Configure(o => o.EndpointName = "tests"));
        using var host = builder.Build();
        var hosted = host.Services.GetServices<IHostedService>().Single(s => s is Herald.Hosting.HeraldHostedService);

        await host.StartAsync();
        await hosted.StartAsync(CancellationToken.None);
        await host.StopAsync();
        await hosted.StopAsync(CancellationToken.None);

        Assert.Equal(1, transport.Started);
        Assert.Equal(1, transport.Stopped);
    }

    [Fact]
    public async Task AHostWhoseLaterHostedServiceFailsToStart_StopsHeraldsConsumer_BeforeTheTransportGoes()
    {
        // The host calls no StopAsync after a failed start, it only disposes: Herald's consumer, started by then, was
        // disposed with the transport (its handlers cut off without the shutdown grace) and never stopped.
        var transport = new CountingTransport(new InMemoryTransport());
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(new Probe());
        builder.Services.AddHerald(h => h.AddHandler<PingHandler>().UseTransport(_ => transport).Configure(o => o.EndpointName = "tests"));
        builder.Services.AddHostedService<FailingToStart>();
        var host = builder.Build();

        await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync());
        Assert.Equal(1, transport.Started);
        Assert.Equal(0, transport.Stopped);
        await ((IAsyncDisposable)host).DisposeAsync();

        Assert.Equal(1, transport.Stopped);
    }

    private sealed class FailingToStart : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => throw new InvalidOperationException("refused by the test");

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    [Fact]
    public void AddHerald_Twice_ConfiguresOneInstance()
    {
        var services = new ServiceCollection();
        services.AddHerald(h => h.AddMessageType<Ping>());
        services.AddHerald(h => h.AddMessageType<Pong>());

        Assert.Single(services, d => d.ServiceType == typeof(Herald.Hosting.HeraldBuilder));
        using var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<MessageTypeRegistry>();
        Assert.True(registry.TryGetByType(typeof(Ping), out _));
        Assert.True(registry.TryGetByType(typeof(Pong), out _));
    }

    [Fact]
    public void AddHandler_OfAClassThatHandlesNothing_ThrowsNamingIt()
    {
        var services = new ServiceCollection();
        var ex = Assert.Throws<ArgumentException>(() => services.AddHerald(h => h.AddHandler<Probe>()));
        Assert.Contains(nameof(Probe), ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task InvalidOptions_FailAtStartNamingTheSetting()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h.AddHandler<PingHandler>().Configure(o => o.MaxConcurrency = 0));
        using var host = builder.Build();

        var ex = await Assert.ThrowsAnyAsync<Exception>(() => host.StartAsync());
        Assert.Contains("MaxConcurrency", ex.Message, StringComparison.Ordinal);
    }

    public static TheoryData<string> TimeSettingsTooLong => new()
    {
        "HeraldOptions.ShutdownTimeout",
        "DeadLetterOptions.MonitorInterval",
        "DeadLetterOptions.StoreFailureRedeliveryDelay",
        "DeadLetterOptions.DrainInterval",
        "DeadLetterOptions.MaxAge",
        "OutboxOptions.PollInterval",
        "OutboxOptions.MaxBackoff",
        "InboxOptions.Window",
        "InboxOptions.CleanupInterval",
        "ProjectionOptions.StatusInterval",
        "IdempotencyOptions.CompletionTimeout",
        "SagaOptions.ResumeInterval",
        "SagaOptions.StaleAfter",
        "EventPublishingOptions.MaxRetryDelay",
        "EventPublishingOptions.RetryDelay",
    };

    [Theory]
    [MemberData(nameof(TimeSettingsTooLong))]
    public async Task ATimeSettingTooLongToWaitOrAddToADate_FailsTheStartNamingIt(string setting)
    {
        // TimeSpan.MaxValue passed the checks, then threw where it was used: the host's stop (leaving the consumer running),
        // the dead-letter monitor and drain, the outbox poll and inbox cleanup (each stopping the host right after its
        // start), the inbox (failing every message). A zero publish delay spun a busy loop.
        var huge = TimeSpan.MaxValue;
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h =>
        {
            h.AddHandler<PingHandler>();
            _ = setting switch
            {
                "HeraldOptions.ShutdownTimeout" => h.Configure(o => o.ShutdownTimeout = huge),
                "DeadLetterOptions.MonitorInterval" => h.ConfigureDeadLetters(o => o.MonitorInterval = huge),
                "DeadLetterOptions.StoreFailureRedeliveryDelay" => h.ConfigureDeadLetters(o => o.StoreFailureRedeliveryDelay = huge),
                "DeadLetterOptions.DrainInterval" => h.ConfigureDeadLetters(o => o.DrainInterval = huge),
                "DeadLetterOptions.MaxAge" => h.ConfigureDeadLetters(o => o.MaxAge = huge),
                "OutboxOptions.PollInterval" => h.UseOutbox(o => o.PollInterval = huge),
                "OutboxOptions.MaxBackoff" => h.UseOutbox(o => o.MaxBackoff = huge),
                "InboxOptions.Window" => h.UseInbox(o => o.Window = huge),
                "InboxOptions.CleanupInterval" => h.UseInbox(o => o.CleanupInterval = huge),
                "ProjectionOptions.StatusInterval" => h.ConfigureProjections(o => o.StatusInterval = huge),
                "IdempotencyOptions.CompletionTimeout" => h.ConfigureIdempotency(o => o.CompletionTimeout = huge),
                "SagaOptions.ResumeInterval" => h.ConfigureSagas(o => o.ResumeInterval = huge),
                "SagaOptions.StaleAfter" => h.ConfigureSagas(o => o.StaleAfter = huge),
                "EventPublishingOptions.MaxRetryDelay" => h.PublishStoredEvents(o => o.MaxRetryDelay = huge),
                "EventPublishingOptions.RetryDelay" => h.PublishStoredEvents(o => o.RetryDelay = TimeSpan.Zero),
                _ => throw new ArgumentOutOfRangeException(nameof(setting), setting, null),
            };
        });
        using var host = builder.Build();

        var ex = await Assert.ThrowsAsync<Microsoft.Extensions.Options.OptionsValidationException>(() => host.StartAsync());
        Assert.Contains(setting, ex.Message, StringComparison.Ordinal);
    }

    private static Envelope RawEnvelope(string type, string json) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = type,
        Time = DateTimeOffset.UtcNow,
        Body = Encoding.UTF8.GetBytes(json),
    };

    private static Task<DeadLetter> WaitForDeadLetterAsync(IHost host) =>
        Eventually.ValueAsync(
            async () => (await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(DeadLetterQuery.All with { Endpoint = "tests" })).FirstOrDefault(),
            "a dead letter of endpoint 'tests' is stored");

    private static async Task<IHost> StartAsync(Probe probe, Action<Herald.Hosting.HeraldBuilder> configure)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(probe);
        builder.Services.AddSingleton<Gate>();
        builder.Services.AddHerald(h =>
        {
            h.Configure(o =>
            {
                o.EndpointName = "tests";
                o.MaxConcurrency = 2;
            });

            // Three attempts, all by redelivery without delay, so DeliveryAttempt counts them.
            h.ConfigureRetries(r => r.Immediate(0).Delayed(2, TimeSpan.Zero, TimeSpan.Zero));
            configure(h);
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    private sealed class CountingTransport(ITransport inner) : DelegatingTransport(inner)
    {
        private int _started;
        private int _stopped;

        public int Started => Volatile.Read(ref _started);

        public int Stopped => Volatile.Read(ref _stopped);

        public override async ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref _started);
            return new Counted(this, await base.ConsumeAsync(queue, options, handler, cancellationToken));
        }

        private sealed class Counted(CountingTransport owner, ITransportConsumer inner) : ITransportConsumer
        {
            public string Queue => inner.Queue;

            public Task StopAsync(CancellationToken cancellationToken = default)
            {
                Interlocked.Increment(ref owner._stopped);
                return inner.StopAsync(cancellationToken);
            }

            public ValueTask DisposeAsync() => inner.DisposeAsync();
        }
    }

    [MessageType("test-ping")]
    public sealed record Ping(string Text);

    [MessageType("test-pong")]
    public sealed record Pong(string Text);

    [MessageType("test-flaky")]
    public sealed record Flaky(int FailTimes);

    [MessageType("test-basket")]
    public sealed class Basket
    {
        public List<string> Lines { get; init; } = [];

        public bool FailWithConflict { get; init; }
    }

    [MessageType("test-gated")]
    public sealed record Gated(int Number);

    public sealed record Unregistered(int Value);

    public sealed class Probe
    {
        private readonly ConcurrentQueue<string> _seen = new();
        private readonly ConcurrentQueue<Envelope> _envelopes = new();
        private int _attempts;

        public IReadOnlyList<string> Seen => [.. _seen];

        public IReadOnlyList<Envelope> Envelopes => [.. _envelopes];

        public int Attempts => Volatile.Read(ref _attempts);

        public void Attempt() => Interlocked.Increment(ref _attempts);

        public void Add(string what, Envelope? envelope = null)
        {
            if (envelope is not null)
            {
                _envelopes.Enqueue(envelope);
            }

            _seen.Enqueue(what);
        }

        public Task WaitAsync(int count) =>
            Eventually.UntilAsync(() => _seen.Count >= count, $"{count} are handled (so far: {string.Join(", ", _seen)})");
    }

    public sealed class Gate
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    public sealed class PingHandler(Probe probe) : IMessageHandler<Ping>
    {
        public ValueTask HandleAsync(Ping message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Add("ping:" + message.Text, context.Envelope);
            return ValueTask.CompletedTask;
        }
    }

    public sealed class SecondPingHandler(Probe probe) : IMessageHandler<Ping>
    {
        public ValueTask HandleAsync(Ping message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Add("second:" + message.Text);
            return ValueTask.CompletedTask;
        }
    }

    public sealed class ForwardingHandler(Probe probe) : IMessageHandler<Ping>
    {
        public async ValueTask HandleAsync(Ping message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Add("ping:" + message.Text, context.Envelope);
            await context.SendAsync(new Pong(message.Text), cancellationToken: cancellationToken);
        }
    }

    public sealed class BusForwardingHandler(Probe probe, IMessageBus bus) : IMessageHandler<Ping>
    {
        public async ValueTask HandleAsync(Ping message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Add("ping:" + message.Text, context.Envelope);
            await bus.SendAsync(new Pong(message.Text), cancellationToken: cancellationToken);
        }
    }

    public sealed class PongHandler(Probe probe) : IMessageHandler<Pong>
    {
        public ValueTask HandleAsync(Pong message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Add("pong:" + message.Text, context.Envelope);
            return ValueTask.CompletedTask;
        }
    }

    public sealed class FlakyHandler(Probe probe) : IMessageHandler<Flaky>
    {
        public ValueTask HandleAsync(Flaky message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Attempt();
            if (context.Envelope.DeliveryAttempt <= message.FailTimes)
            {
                throw new InvalidOperationException($"failing attempt {context.Envelope.DeliveryAttempt}");
            }

            probe.Add("flaky", context.Envelope);
            return ValueTask.CompletedTask;
        }
    }

    // Records the lines it was handed, adds one, and fails its first run.
    public sealed class BasketHandler(Probe probe) : IMessageHandler<Basket>
    {
        public ValueTask HandleAsync(Basket message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Add(string.Join(",", message.Lines), context.Envelope);
            message.Lines.Add("delivery fee");
            if (probe.Seen.Count == 1)
            {
                throw message.FailWithConflict
                    ? new Herald.EventSourcing.ConcurrencyException("basket-1", Herald.EventSourcing.ExpectedVersion.Exactly(1), 2)
                    : new InvalidOperationException("the first run fails");
            }

            return ValueTask.CompletedTask;
        }
    }

    public sealed class GatedHandler(Probe probe, Gate gate) : IMessageHandler<Gated>
    {
        public async ValueTask HandleAsync(Gated message, MessageContext context, CancellationToken cancellationToken)
        {
            gate.Entered.TrySetResult();
            await gate.Release.Task;
            probe.Add("gated:" + message.Number);
        }
    }

    public sealed class OuterMiddleware(Probe probe) : IMessageMiddleware
    {
        public async ValueTask InvokeAsync(MessageContext context, MessageHandlerDelegate next)
        {
            probe.Add("outer");
            await next(context);
        }
    }

    public sealed class InnerMiddleware(Probe probe) : IMessageMiddleware
    {
        public async ValueTask InvokeAsync(MessageContext context, MessageHandlerDelegate next)
        {
            probe.Add("inner");
            await next(context);
        }
    }
}
