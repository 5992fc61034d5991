using Herald.Handling;
using Herald.Sagas;
using Herald.Testing.Observing;
using Herald.Testing.Tests.Sample;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Testing.Tests;

/// <summary>
/// AdvanceTimeAsync moves the fake clock as real time would pass: everything that comes due within the window runs at its
/// own time, including what came due because of something that ran earlier in the window.
/// </summary>
public sealed class TimeTravelTests
{
    [Fact]
    public async Task AdvanceTime_OverSeveralDelayedRedeliveries_RunsEachOneWithinTheWindow()
    {
        await using var harness = await SampleHarness.StartAsync(more: h => h.ConfigureRetries<ChargeCard>(r => r.Immediate(0).Delayed(3, TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(1))));
        var start = harness.Time.GetUtcNow();

        // Declined every time: three delayed redeliveries, a minute apart, then the dead letters.
        var sent = await harness.SendAsync(new ChargeCard(Guid.NewGuid(), 5000m));
        await harness.Handled.ExpectAsync<ChargeCard>(HandlingOutcome.Retrying);
        await harness.WaitForIdleAsync();

        await harness.AdvanceTimeAsync(TimeSpan.FromHours(1));

        var deliveries = harness.Handled.Select<ChargeCard>();
        Assert.Equal(
            [HandlingOutcome.Retrying, HandlingOutcome.Retrying, HandlingOutcome.Retrying, HandlingOutcome.DeadLettered],
            deliveries.Select(d => d.Outcome));
        Assert.All(deliveries.Skip(1), d => Assert.True(d.Time < start + TimeSpan.FromMinutes(10), $"{d} ran at {d.Time}, not when it came due."));
        Assert.Equal(sent.Envelope.MessageId, Assert.Single(harness.DeadLettered.All).Envelope.MessageId);
        Assert.Equal(start + TimeSpan.FromHours(1), harness.Time.GetUtcNow());
    }

    [Fact]
    public async Task AdvanceTime_PastDelayedSends_HandlesEachAtItsOwnDueTime()
    {
        await using var harness = await SampleHarness.StartAsync();
        var start = harness.Time.GetUtcNow();
        var early = await harness.SendAsync(new PlaceOrder(Guid.NewGuid(), "ada", 1m), new DeliveryOptions { Delay = TimeSpan.FromMinutes(10) });
        var late = await harness.SendAsync(new PlaceOrder(Guid.NewGuid(), "bob", 2m), new DeliveryOptions { Delay = TimeSpan.FromMinutes(40) });

        await harness.AdvanceTimeAsync(TimeSpan.FromHours(1));

        Assert.Equal(start + TimeSpan.FromMinutes(10), (await harness.Handled.ExpectSettledAsync(early.Envelope.MessageId)).Time);
        Assert.Equal(start + TimeSpan.FromMinutes(40), (await harness.Handled.ExpectSettledAsync(late.Envelope.MessageId)).Time);
        Assert.Equal(start + TimeSpan.FromHours(1), harness.Time.GetUtcNow());
    }

    [Fact]
    public async Task AdvanceTime_ThroughMoreDueTimesThanTheDeadlineAllows_FailsSayingWhereTheClockStands()
    {
        await using var harness = await HeraldTestHarness.StartAsync(h => h
            .AddMessageTypesFromAssembly(typeof(Tick).Assembly)
            .AddHandler<Ticker>()
            .ConfigureTestHarness(o => o.DefaultTimeout = TimeSpan.FromMilliseconds(500)));
        await harness.SendAsync(new Tick(0));
        await harness.WaitForIdleAsync(TimeSpan.FromSeconds(30));

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.AdvanceTimeAsync(TimeSpan.FromDays(365)));

        Assert.StartsWith("AdvanceTimeAsync(365.00:00:00) did not finish within 00:00:00.5000000: the fake clock stands at 2030-01-", error.Message, StringComparison.Ordinal);
        Assert.Contains("call Time.Advance and then WaitForIdleAsync", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AdvanceTime_OverSeveralDelayedRetriesOfASagaStep_RunsEachOneWithinTheWindow()
    {
        var retried = OrderSagas.ShippingFailingFirst("twice-retried-shipping", failures: 2, delayedRetries: 2);
        await using var harness = await SampleHarness.StartAsync();
        var start = harness.Time.GetUtcNow();
        var run = harness.RunSagaAsync(retried, "ship-1", new FulfilmentData { OrderId = Guid.NewGuid() });

        // Advanced only once the first delayed retry waits on the clock.
        await harness.WaitForIdleAsync();
        Assert.False(run.IsCompleted);
        await harness.AdvanceTimeAsync(TimeSpan.FromHours(1));

        var result = await run;
        result.ExpectStatus(SagaStatus.Completed);
        Assert.Equal([1, 2, 3], result.Steps.Select(s => s.Attempt));
        Assert.True(Assert.Single(result.Sent).Time < start + TimeSpan.FromMinutes(10), "The last retry ran at the end of the window, not when it came due.");
    }
}

/// <summary>A reminder that sends itself again a minute later, for ever.</summary>
[Herald.Messages.MessageType("tick")]
public sealed record Tick(int Count);

public sealed class Ticker : IMessageHandler<Tick>
{
    public ValueTask HandleAsync(Tick message, MessageContext context, CancellationToken cancellationToken) =>
        context.SendAsync(new Tick(message.Count + 1), new DeliveryOptions { Delay = TimeSpan.FromMinutes(1) }, cancellationToken);
}
