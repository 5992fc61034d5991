using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Handling.Pipeline;
using Herald.Handling;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Tests.Handling;

/// <summary>An event-store subscription run through an endpoint's chain (the seam projections use), on the in-memory engine.</summary>
public sealed class SubscriptionPipelineTests
{
    private const string SubscriptionId = "pipe-sub";

    [Fact]
    public async Task EachCheckpoint_CommitsWithItsHandlersWrites_AndAPoisonEventIsDeadLetteredAndPassed()
    {
        var log = new HandlingLog();
        await using var services = Build(log, h => h.ConfigureRetries(r => r.NeverRetry<InvalidOperationException>()));
        var store = services.GetRequiredService<IEventStore>();
        var factory = services.GetRequiredService<EnvelopeFactory>();
        var appended = await store.AppendAsync("jobs-1", ExpectedVersion.NoStream, [factory.Create(new Job("one")), factory.Create(new Job("bad")), factory.Create(new Job("three"))]);
        var positions = await PositionsAsync(store, "jobs-1");

        await using (var subscription = Subscribe(services))
        {
            await subscription.StartAsync();
            await subscription.WaitForPositionAsync(appended.LastPosition).WaitAsync(TimeSpan.FromSeconds(30));
        }

        // Read inside each handler: one's checkpoint committed with one's effect; bad's rolled back with its effect.
        Assert.Equal([("one", null), ("bad", positions[0]), ("three", positions[0])], log.Seen);
        Assert.Equal(1, await store.GetStreamVersionAsync("effects-one"));
        Assert.Equal(0, await store.GetStreamVersionAsync("effects-bad"));
        Assert.Equal(1, await store.GetStreamVersionAsync("effects-three"));
        var deadLetter = Assert.Single(await services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = SubscriptionId }));
        Assert.Equal(DeadLetterCause.NotRetryable, deadLetter.Cause);
        Assert.Contains("bad job", deadLetter.ErrorMessage, StringComparison.Ordinal);
        // Past the last event (the subscription also passes the effects it does not follow, up to the head).
        Assert.True(await services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync(SubscriptionId) >= positions[2]);
    }

    [Fact]
    public async Task FailingHandler_IsRetriedInProcessPerTheRetryPolicy_ThenHandledOnce()
    {
        var log = new HandlingLog { FailuresLeft = 3 };
        await using var services = Build(log, h => h.ConfigureRetries(r => r.Immediate(1).Delayed(2, TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(2))));
        var store = services.GetRequiredService<IEventStore>();
        var appended = await store.AppendAsync("jobs-2", ExpectedVersion.NoStream, [services.GetRequiredService<EnvelopeFactory>().Create(new Job("flaky"))]);

        await using (var subscription = Subscribe(services))
        {
            await subscription.StartAsync();
            await subscription.WaitForPositionAsync(appended.LastPosition).WaitAsync(TimeSpan.FromSeconds(30));
        }

        // Attempts 1 and 2 on the first run (one immediate retry), then one per in-process redelivery.
        Assert.Equal([1, 2, 3, 4], log.Attempts);
        Assert.Equal(1, await store.GetStreamVersionAsync("effects-flaky"));
        Assert.Empty(await services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = SubscriptionId }));
    }

    [Fact]
    public async Task EventsOfTypesWithoutAHandler_AreNotFollowed_WhenNoFilterIsGiven()
    {
        var log = new HandlingLog();
        await using var services = Build(log, _ => { });
        var store = services.GetRequiredService<IEventStore>();
        var factory = services.GetRequiredService<EnvelopeFactory>();
        var other = factory.Create(new Job("x")) with { MessageType = "pipe-unhandled" };
        var appended = await store.AppendAsync("jobs-3", ExpectedVersion.NoStream, [other, factory.Create(new Job("after"))]);

        await using (var subscription = Subscribe(services))
        {
            await subscription.StartAsync();
            await subscription.WaitForPositionAsync(appended.LastPosition).WaitAsync(TimeSpan.FromSeconds(30));
        }

        Assert.Equal(["after"], log.Seen.Select(s => s.Name));
        Assert.Empty(await services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = SubscriptionId }));
    }

    private static ServiceProvider Build(HandlingLog log, Action<Herald.Hosting.HeraldBuilder> configure)
    {
        var services = new ServiceCollection();
        services.AddSingleton(log);
        services.AddHerald(h =>
        {
            h.AddHandler<JobHandler>().AddMessageType<JobDone>();
            configure(h);
        });
        return services.BuildServiceProvider();
    }

    private static EventSubscription Subscribe(IServiceProvider services) =>
        services.GetRequiredService<EndpointPipelineFactory>().CreateSubscription(
            services.GetRequiredService<IEventStore>(),
            services.GetRequiredService<ICheckpointStore>(),
            new EventSubscriptionOptions { SubscriptionId = SubscriptionId, CheckpointEvery = 1_000 });

    private static async Task<List<long>> PositionsAsync(IEventStore store, string stream)
    {
        var positions = new List<long>();
        await foreach (var recorded in store.ReadStreamAsync(stream))
        {
            positions.Add(recorded.Position);
        }

        return positions;
    }

    [MessageType("pipe-job")]
    public sealed record Job(string Name);

    [MessageType("pipe-job-done")]
    public sealed record JobDone(string Name);

    public sealed class HandlingLog
    {
        private readonly ConcurrentQueue<(string Name, long? Checkpoint)> _seen = new();
        private readonly ConcurrentQueue<int> _attempts = new();

        public int FailuresLeft { get; set; }

        public IReadOnlyList<(string Name, long? Checkpoint)> Seen => [.. _seen];

        public IReadOnlyList<int> Attempts => [.. _attempts];

        public void Add(string name, long? checkpoint, int attempt)
        {
            _seen.Enqueue((name, checkpoint));
            _attempts.Enqueue(attempt);
        }
    }

    /// <summary>Writes its effect (an event) in the attempt's unit of work, and notes the checkpoint it finds.</summary>
    public sealed class JobHandler(HandlingLog log, IEventStore store, ICheckpointStore checkpoints, EnvelopeFactory envelopes) : IMessageHandler<Job>
    {
        public async ValueTask HandleAsync(Job message, MessageContext context, CancellationToken cancellationToken)
        {
            log.Add(message.Name, await checkpoints.GetCheckpointAsync(SubscriptionId, cancellationToken), context.Attempt);
            await store.AppendAsync("effects-" + message.Name, ExpectedVersion.Any, [envelopes.Create(new JobDone(message.Name))], context.UnitOfWork, cancellationToken);
            if (message.Name == "bad")
            {
                throw new InvalidOperationException("bad job");
            }

            if (log.FailuresLeft > 0)
            {
                log.FailuresLeft--;
                throw new TimeoutException("flaky job");
            }
        }
    }
}
