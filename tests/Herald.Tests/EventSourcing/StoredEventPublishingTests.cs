using Herald.Conformance.Transport;
using System.Collections.Concurrent;
using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.Handling;
using Herald.Messages;
using Herald.Persistence;
using Herald.Conformance;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Tests.EventSourcing;

public sealed class StoredEventPublishingTests
{
    [Fact]
    public async Task SavedAggregateEvents_ArePublishedWithTheRecordedEnvelope_InOrder()
    {
        var seen = new ConcurrentQueue<Envelope>();
        using var host = await StartAsync(seen);
        var stream = await host.Services.GetRequiredService<UnitOfWorkRunner>().RunAsync(async (services, ct) =>
        {
            var repository = services.GetRequiredService<AggregateRepository<Lamp>>();
            var lamp = await repository.LoadAsync("kitchen", ct);
            lamp.Toggle();
            lamp.Toggle();
            await repository.SaveAsync(lamp, cancellationToken: ct);
            return repository.StreamNameFor("kitchen");
        });

        await Eventually.UntilAsync(() => seen.Count == 2, "both stored events are handled");
        var stored = new List<RecordedEvent>();
        await foreach (var recorded in host.Services.GetRequiredService<IEventStore>().ReadStreamAsync(stream))
        {
            stored.Add(recorded);
        }

        Assert.Equal(stored.Select(r => r.EventId), seen.Select(e => e.MessageId));
        Assert.Equal(stored.Select(r => r.Envelope.Body.ToArray()), seen.Select(e => e.Body.ToArray()));
    }

    [Fact]
    public async Task PublishFailure_IsRetriedUntilTheTransportTakesTheEvent_NothingSkipped()
    {
        var seen = new ConcurrentQueue<Envelope>();
        var failures = 2;
        using var host = await StartAsync(seen, services => services.AddSingleton<Func<bool>>(() => Interlocked.Decrement(ref failures) >= 0));
        await host.Services.GetRequiredService<UnitOfWorkRunner>().RunAsync(async (services, ct) =>
        {
            var repository = services.GetRequiredService<AggregateRepository<Lamp>>();
            var lamp = await repository.LoadAsync("hall", ct);
            lamp.Toggle();
            await repository.SaveAsync(lamp, cancellationToken: ct);
        });

        await Eventually.UntilAsync(() => seen.Count == 1, "the event is handled after the transport recovers");
        Assert.True(Volatile.Read(ref failures) < 0, "the transport refused the first publishes");
    }

    [Fact]
    public async Task PublishRefusedForGood_IsDeadLetteredAsRejected_AndTheEventsAfterItArePublished()
    {
        // Issue 10: a permanent send error used to be retried forever, and every later event waited behind it.
        var seen = new ConcurrentQueue<Envelope>();
        var refusals = 1;
        using var host = await StartAsync(seen, services => services.AddSingleton<Func<Exception?>>(
            () => Interlocked.Decrement(ref refusals) >= 0 ? new MessageRejectedException("the broker refuses this topic for good") : null));
        await host.Services.GetRequiredService<UnitOfWorkRunner>().RunAsync(async (services, ct) =>
        {
            var repository = services.GetRequiredService<AggregateRepository<Lamp>>();
            var lamp = await repository.LoadAsync("porch", ct);
            lamp.Toggle();
            lamp.Toggle();
            await repository.SaveAsync(lamp, cancellationToken: ct);
        });

        await Eventually.UntilAsync(() => seen.Count == 1, "the event after the refused one is handled");
        var deadLetter = Assert.Single(await host.Services.GetRequiredService<Herald.Reliability.DeadLetters.IDeadLetterStore>().ListAsync(
            new Herald.Reliability.DeadLetters.DeadLetterQuery { Endpoint = "lamp-toggled" }));
        Assert.Equal(Herald.Reliability.DeadLetters.DeadLetterCause.SendRejected, deadLetter.Cause);
        Assert.NotEqual(deadLetter.Envelope.MessageId, Assert.Single(seen).MessageId);

        // A retry publishes it to the topic's subscribers; it used to be sent to a queue named like the topic, which nobody reads.
        Assert.Equal("lamp-toggled", deadLetter.Envelope.GetHeader(HeaderNames.DeadLetterTopic));
        var retried = await host.Services.GetRequiredService<Herald.Reliability.DeadLetters.DeadLetterManager>().RetryAsync(deadLetter.Id);
        Assert.Equal(Herald.Reliability.DeadLetters.DeadLetterRetryOutcome.Retried, retried);
        await Eventually.UntilAsync(() => seen.Any(e => e.MessageId == deadLetter.Envelope.MessageId), "the retried event is handled by the subscriber");
    }

    [Fact]
    public async Task APublishCancelledByTheTransportsOwnTimeout_IsRetried_AndPublishingGoesOn()
    {
        // An OperationCanceledException the publisher did not ask for (a client's request timeout) escaped the retry loop and
        // stopped the subscription for good: nothing was published again until a restart, and nothing was logged.
        var seen = new ConcurrentQueue<Envelope>();
        var timeouts = 1;
        var clock = new FakeTimeProvider();
        using var host = await StartAsync(seen, services => services
            .AddSingleton<TimeProvider>(clock)
            .AddSingleton<Func<Exception?>>(() => Interlocked.Decrement(ref timeouts) >= 0 ? new TaskCanceledException("the client's request timed out") : null));
        await SaveToggledAsync(host, "attic", times: 2);

        // The clock moves a millisecond a look, far less than the publisher's 5 s before it leads again: the event must be
        // published by the retry loop, not by starting over.
        await Eventually.UntilAsync(
            () =>
            {
                clock.Advance(TimeSpan.FromMilliseconds(1));
                return seen.Count == 2;
            },
            "both events are published after the timed-out publish");
        Assert.True(Volatile.Read(ref timeouts) < 0, "the first publish timed out");
    }

    [Fact]
    public async Task ASubscriptionThatFails_IsStartedAgain_NotLeftHoldingTheLeadPublishingNothing()
    {
        // The publisher waited on its leadership only, so a subscription that stopped on a failure (here a checkpoint another
        // leader moved) left this node leading and publishing nothing until a restart.
        var seen = new ConcurrentQueue<Envelope>();
        var clock = new FakeTimeProvider();
        using var host = await StartAsync(seen, services => services
            .AddSingleton<TimeProvider>(clock)
            .AddSingleton<ICheckpointStore>(sp => new ConflictingOnceCheckpoints(sp.GetRequiredService<Herald.EventSourcing.InMemory.InMemoryEventStore>())));
        await SaveToggledAsync(host, "cellar", times: 1);
        var checkpoints = (ConflictingOnceCheckpoints)host.Services.GetRequiredService<ICheckpointStore>();
        await Eventually.UntilAsync(() => checkpoints.Conflicted, "the checkpoint save conflicts");

        var later = await SaveToggledAsync(host, "cellar", times: 1);
        await Eventually.UntilAsync(
            () =>
            {
                clock.Advance(TimeSpan.FromSeconds(1));
                return seen.Any(e => e.MessageId == later);
            },
            "the event saved after the failure is published");
    }

    private static async Task<Guid> SaveToggledAsync(IHost host, string id, int times)
    {
        var stream = await host.Services.GetRequiredService<UnitOfWorkRunner>().RunAsync(async (services, ct) =>
        {
            var repository = services.GetRequiredService<AggregateRepository<Lamp>>();
            var lamp = await repository.LoadAsync(id, ct);
            for (var i = 0; i < times; i++)
            {
                lamp.Toggle();
            }

            await repository.SaveAsync(lamp, cancellationToken: ct);
            return repository.StreamNameFor(id);
        });

        RecordedEvent? last = null;
        await foreach (var recorded in host.Services.GetRequiredService<IEventStore>().ReadStreamAsync(stream))
        {
            last = recorded;
        }

        return last!.EventId;
    }

    [Fact]
    public async Task AnEventStoredUnderAFormerTypeName_IsPublishedToTheTopicOfItsCurrentName_AndHandledAsThatType()
    {
        // The consumer binds the topic of "lamp-toggled"; an event stored as "lamp-switched" (the name before a rename) went
        // to a topic nobody binds, and a filter on the current name did not select it.
        var seen = new ConcurrentQueue<Envelope>();
        using var host = await StartAsync(
            seen,
            services => services.AddSingleton(new Herald.EventSourcing.Upcasting.EventUpcasterRegistry().AddRename("lamp-switched", "lamp-toggled")),
            EventFilter.ForEventTypes("lamp-toggled"));
        var stored = host.Services.GetRequiredService<EnvelopeFactory>().Create(new LampToggled(true)) with { MessageType = "lamp-switched" };

        await host.Services.GetRequiredService<IEventStore>().AppendAsync("lamp-garden", ExpectedVersion.Any, [stored]);

        await Eventually.UntilAsync(() => seen.Count == 1, "the event of the former name is handled");
        var handled = Assert.Single(seen);
        Assert.Equal((stored.MessageId, "lamp-toggled"), (handled.MessageId, handled.MessageType));
    }

    private static async Task<IHost> StartAsync(ConcurrentQueue<Envelope> seen, Action<IServiceCollection>? extra = null, EventFilter? filter = null)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(seen);
        extra?.Invoke(builder.Services);
        builder.Services.AddHerald(h => h
            .AddHandler<LampHandler>()
            .AddAggregate<Lamp>()
            .PublishStoredEvents(o =>
            {
                o.RetryDelay = TimeSpan.FromMilliseconds(1);
                o.Filter = filter;
            })
            .UseTransport(sp => new FlakyTransport(new Herald.Transport.InMemory.InMemoryTransport(), sp.GetService<Func<bool>>(), sp.GetService<Func<Exception?>>()))
            .Configure(o => o.EndpointName = "lamps-" + Guid.NewGuid().ToString("N")[..6]));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [MessageType("lamp-toggled")]
    public sealed record LampToggled(bool On);

    public sealed class Lamp : Aggregate
    {
        public bool On { get; private set; }

        public void Toggle() => Raise(new LampToggled(!On));

        protected override void When(object @event)
        {
            if (@event is LampToggled toggled)
            {
                On = toggled.On;
            }
        }
    }

    public sealed class LampHandler(ConcurrentQueue<Envelope> seen) : IMessageHandler<LampToggled>
    {
        public ValueTask HandleAsync(LampToggled message, MessageContext context, CancellationToken cancellationToken)
        {
            seen.Enqueue(context.Envelope);
            return ValueTask.CompletedTask;
        }
    }

    private sealed class ConflictingOnceCheckpoints(ICheckpointStore inner) : ICheckpointStore
    {
        private int _conflicts = 1;

        public bool Conflicted => Volatile.Read(ref _conflicts) <= 0;

        public ValueTask<long?> GetCheckpointAsync(string subscriptionId, CancellationToken cancellationToken = default) =>
            inner.GetCheckpointAsync(subscriptionId, cancellationToken);

        public ValueTask SetCheckpointAsync(string subscriptionId, long position, CancellationToken cancellationToken = default) =>
            Interlocked.Decrement(ref _conflicts) >= 0
                ? throw new CheckpointConflictException(subscriptionId, position)
                : inner.SetCheckpointAsync(subscriptionId, position, cancellationToken);

        public ValueTask SetCheckpointAsync(string subscriptionId, long position, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) =>
            inner.SetCheckpointAsync(subscriptionId, position, unitOfWork, cancellationToken);
    }

    private sealed class FlakyTransport(ITransport inner, Func<bool>? fail, Func<Exception?>? refuse) : DelegatingTransport(inner)
    {
        public override ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
            fail?.Invoke() == true
                ? throw new InvalidOperationException("broker down")
                : refuse?.Invoke() is { } refusal
                    ? throw refusal
                    : base.PublishAsync(topic, envelope, options, cancellationToken);
    }
}
