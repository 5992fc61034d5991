using Herald.EventSourcing;
using Herald.Messages;
using Herald.Projections;
using Herald.Testing.Observing;
using Herald.Testing.Tests.Sample;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Testing.Tests;

/// <summary>What "handled" means without an outcome, and what idle waits for besides deliveries.</summary>
public sealed class IdleAndOutcomeTests
{
    [Fact]
    public async Task HandledExpect_WithoutAnOutcome_DoesNotMatchADeliveryThatOnlyFailed()
    {
        // As MassTransit's harness tells consumed from faulted: a delivery that was dead-lettered was not handled.
        await using var harness = await SampleHarness.StartAsync(more: h => h.ConfigureRetries<ChargeCard>(r => r.Immediate(0).Delayed(0, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1))));
        var declined = Guid.NewGuid();

        await harness.SendAsync(new ChargeCard(declined, 5000m));
        await harness.Handled.ExpectAsync<ChargeCard>(HandlingOutcome.DeadLettered, c => c.OrderId == declined);

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Handled.ExpectAsync<ChargeCard>(c => c.OrderId == declined, TimeSpan.Zero));
        Assert.Contains("ChargeCard (Succeeded)", error.Message, StringComparison.Ordinal);
        Assert.Contains("DeadLettered", error.Message, StringComparison.Ordinal);
        Assert.False(await harness.Handled.AnyAsync<ChargeCard>(c => c.OrderId == declined, TimeSpan.Zero));

        var charged = Guid.NewGuid();
        await harness.SendAsync(new ChargeCard(charged, 10m));
        var handled = await harness.Handled.ExpectAsync<ChargeCard>(c => c.OrderId == charged);
        Assert.Equal(HandlingOutcome.Succeeded, handled.Outcome);
    }

    [Fact]
    public async Task HandledExpect_WithoutAnOutcome_DoesNotMatchADeliveryThatIsRetrying()
    {
        var gateway = new CardGateway { Outages = 1 };
        await using var harness = await SampleHarness.StartAsync(gateway, h => h.ConfigureRetries<ChargeCard>(r => r.Immediate(0).Delayed(2, TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(1))));

        await harness.SendAsync(new ChargeCard(Guid.NewGuid(), 10m));
        await harness.Handled.ExpectAsync<ChargeCard>(HandlingOutcome.Retrying);
        await harness.WaitForIdleAsync();

        Assert.False(await harness.Handled.AnyAsync<ChargeCard>(timeout: TimeSpan.Zero));
        await harness.AdvanceTimeAsync(TimeSpan.FromMinutes(1));
        Assert.Equal(HandlingOutcome.Succeeded, (await harness.Handled.ExpectAsync<ChargeCard>()).Outcome);
    }

    [Fact]
    public async Task WaitForIdle_WaitsUntilTheAsyncProjectionsCaughtUpWithTheEventStore()
    {
        var projection = new GatedOrders();
        await using var harness = await HeraldTestHarness.StartAsync(h => h.AddMessageType<OrderPlaced>().AddProjection(projection));
        var orderId = Guid.NewGuid();
        var placed = harness.Services.GetRequiredService<EnvelopeFactory>().Create(new OrderPlaced(orderId, 25m));
        await harness.Services.GetRequiredService<IEventStore>().AppendAsync("order-" + orderId.ToString("N"), ExpectedVersion.NoStream, [placed]);
        await projection.Entered.Task.WaitAsync(harness.DefaultTimeout);

        // The projection holds the event: its read model is behind the store, so the host is not idle.
        var busy = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.WaitForIdleAsync(TimeSpan.FromMilliseconds(100)));
        Assert.Contains("'gated-orders'", busy.Message, StringComparison.Ordinal);

        projection.Gate.SetResult();
        await harness.WaitForIdleAsync();
        var summary = await harness.Services.GetRequiredService<ReadModels>().GetAsync(GatedOrders.Orders, orderId.ToString("N"));
        Assert.NotNull(summary);
        Assert.Equal(25m, summary.Amount);
    }

    private sealed record OrderSummary(Guid OrderId, decimal Amount);

    private sealed class GatedOrders : Projection
    {
        public static readonly ReadModelTable<OrderSummary> Orders = new("gated_orders");

        public GatedOrders()
            : base("gated-orders")
        {
            Table(Orders);
            On<OrderPlaced>(async (e, context, cancellationToken) =>
            {
                Entered.TrySetResult();
                await Gate.Task.WaitAsync(cancellationToken);
                await context.UpsertAsync(Orders, e.OrderId.ToString("N"), new OrderSummary(e.OrderId, e.Amount));
            });
        }

        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
