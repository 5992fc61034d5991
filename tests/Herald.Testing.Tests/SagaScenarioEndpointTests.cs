using System.Collections.Concurrent;
using Herald.Handling;
using Herald.Messages;
using Herald.Sagas;
using Herald.Testing.Observing;
using Herald.Testing.Tests.Sample;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Testing.Tests;

/// <summary>
/// A saga scenario step waits for, and judges, the delivery at the saga's own endpoint, also when another consumer in the
/// host takes the same event on a queue of its own and settles it first with another outcome.
/// </summary>
public sealed class SagaScenarioEndpointTests
{
    private const string SagaEndpoint = "orders";
    private const string AuditQueue = "audit";

    // Places an order in one step (the final state "Placed"), unless the amount is negative.
    private static readonly SagaStateMachine<FulfilmentState> Placing = SagaStateMachine.Create<FulfilmentState>("placing", m => m
        .Correlate<OrderPlaced>(e => e.OrderId.ToString())
        .Initially<OrderPlaced>("Placed", (saga, e) =>
        {
            saga.Data.Amount = e.Amount < 0 ? throw new InvalidOperationException("A negative amount.") : e.Amount;
            return ValueTask.CompletedTask;
        })
        .Final("Placed"));

    [Fact]
    public async Task WhenAsync_AnotherConsumerOfTheEventFailsFirst_ReturnsTheSagasOwnSuccess()
    {
        await using var harness = await StartAsync(audit: d => d.NackAsync(TimeSpan.FromMinutes(1)));
        var orderId = Guid.NewGuid();

        var result = await harness.Scenario(Placing).WhenAsync(new OrderPlaced(orderId, 40m));

        Assert.Equal((SagaEndpoint, HandlingOutcome.Succeeded), (result.Handled.Endpoint, result.Handled.Outcome));
        Assert.Equal(40m, result.ExpectState("Placed").Data.Amount);

        // Not hidden: the other consumer's failure is observed where every delivery is.
        Assert.Equal(HandlingOutcome.Retrying, Assert.Single(harness.Handled.All, h => h.Endpoint == AuditQueue).Outcome);
    }

    [Fact]
    public async Task WhenAsync_AnotherConsumerOfTheEventIsDoneFirst_JudgesAndReadsTheSagaAfterItsOwnDelivery()
    {
        await using var harness = await StartAsync(audit: d => d.AckAsync());
        var orderId = Guid.NewGuid();

        var result = await harness.Scenario(Placing).WhenAsync(new OrderPlaced(orderId, 40m));

        Assert.Equal(40m, result.ExpectState("Placed").Data.Amount);
        Assert.Equal(SagaEndpoint, result.Handled.Endpoint);
    }

    [Fact]
    public async Task WhenAsync_TheSagaFailsAfterAnotherConsumerOfTheEventSucceeded_ThrowsWithTheSagasException()
    {
        await using var harness = await StartAsync(audit: d => d.AckAsync());

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Scenario(Placing).WhenAsync(new OrderPlaced(Guid.NewGuid(), -1m)));

        Assert.Contains($"at '{SagaEndpoint}': Retrying (InvalidOperationException: A negative amount.)", error.Message, StringComparison.Ordinal);
        Assert.Equal("A negative amount.", Assert.IsType<InvalidOperationException>(error.InnerException).Message);
    }

    [Fact]
    public async Task WhenFailingAsync_TheSagaFailsAfterAnotherConsumerOfTheEventSucceeded_ReturnsTheSagasFailure()
    {
        await using var harness = await StartAsync(audit: d => d.AckAsync());

        var result = await harness.Scenario(Placing).WhenFailingAsync(new OrderPlaced(Guid.NewGuid(), -1m));

        Assert.Equal((SagaEndpoint, HandlingOutcome.Retrying), (result.Handled.Endpoint, result.Handled.Outcome));
        Assert.Equal("A negative amount.", Assert.Single(result.Handled.Failures).Message);
        Assert.Null(result.Saga);
    }

    [Fact]
    public async Task GivenAsync_AnEventTheSagaFailsAfterAnotherConsumerOfItSucceeded_Throws()
    {
        await using var harness = await StartAsync(audit: d => d.AckAsync());

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Scenario(Placing).GivenAsync([new OrderPlaced(Guid.NewGuid(), -1m)]));

        Assert.Equal("A negative amount.", Assert.IsType<InvalidOperationException>(error.InnerException).Message);
    }

    // Handlers of one event in one host run in one delivery, in one unit of work: another handler's failure is the
    // saga's too, and its transition is not saved.
    [Fact]
    public async Task WhenAsync_AnotherHandlerOfTheEventInTheHostFails_FailsTheStep_ForItFailsTheSagasDelivery()
    {
        await using var harness = await HeraldTestHarness.StartAsync(h => h
            .AddMessageTypesFromAssembly(typeof(OrderPlaced).Assembly)
            .AddSaga(Placing)
            .AddHandler<FailingAudit>()
            .ConfigureRetries(r => r.Immediate(0).Delayed(1, TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(1))));
        var orderId = Guid.NewGuid();

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Scenario(Placing).WhenAsync(new OrderPlaced(orderId, 40m)));

        Assert.Equal("The audit log is full.", Assert.IsType<InvalidOperationException>(error.InnerException).Message);
        Assert.Null(await harness.Scenario(Placing).LoadAsync(orderId.ToString()));
    }

    // The saga's endpoint is named other than the default, and an audit consumer of the host's transport (as a user wires
    // one beside Herald's) takes OrderPlaced on a queue of its own. The saga's delivery of each message waits until the audit
    // consumer has settled it, so the other outcome is always observed first.
    private static async Task<HeraldTestHarness> StartAsync(Func<Delivery, ValueTask> audit)
    {
        var auditQueue = new AuditConsumer(audit);
        var harness = await HeraldTestHarness.StartAsync(h => h
            .AddMessageTypesFromAssembly(typeof(OrderPlaced).Assembly)
            .AddSaga(Placing)
            .Configure(o => o.EndpointName = SagaEndpoint)
            .ConfigureRetries(r => r.Immediate(0).Delayed(1, TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(1)))
            .UseMiddleware<HeldUntilAudited>()
            .Services.AddSingleton(auditQueue));
        await auditQueue.StartAsync(harness);
        return harness;
    }

    private sealed class AuditConsumer(Func<Delivery, ValueTask> settle)
    {
        private readonly ConcurrentDictionary<Guid, TaskCompletionSource> _settled = new();

        public Task SettledAsync(Guid messageId) => Settled(messageId).Task;

        public async Task StartAsync(HeraldTestHarness harness)
        {
            var transport = harness.Services.GetRequiredService<ITransport>();
            var topic = harness.Services.GetRequiredService<MessageTypeRegistry>().GetName(typeof(OrderPlaced));
            await transport.DeclareQueueAsync(AuditQueue);
            await transport.BindAsync(topic, AuditQueue);
            await transport.ConsumeAsync(AuditQueue, ConsumerOptions.Default, async (delivery, _) =>
            {
                await settle(delivery);
                Settled(delivery.Envelope.MessageId).TrySetResult();
            });
        }

        private TaskCompletionSource Settled(Guid messageId) =>
            _settled.GetOrAdd(messageId, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
    }

    private sealed class HeldUntilAudited(AuditConsumer audit) : IMessageMiddleware
    {
        public async ValueTask InvokeAsync(MessageContext context, MessageHandlerDelegate next)
        {
            await audit.SettledAsync(context.Envelope.MessageId).WaitAsync(TimeSpan.FromSeconds(30), context.CancellationToken);
            await next(context);
        }
    }

    private sealed class FailingAudit : IMessageHandler<OrderPlaced>
    {
        public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken) =>
            throw new InvalidOperationException("The audit log is full.");
    }
}
