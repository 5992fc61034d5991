using Herald.Reliability.DeadLetters;
using Herald.Testing.Observing;
using Herald.Testing.Tests.Sample;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Testing.Tests;

/// <summary>The harness used as an application's tests use it: send, then expect what was handled, published and dead-lettered.</summary>
public sealed class HarnessTests
{
    [Fact]
    public async Task Send_PlaceOrder_IsHandledAndPublishesOrderPlacedCausedByIt()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();

        var sent = await harness.SendAsync(new PlaceOrder(orderId, "ada", 25m));

        var handled = await harness.Handled.ExpectAsync<PlaceOrder>(HandlingOutcome.Succeeded, c => c.OrderId == orderId);
        var placed = await harness.Published.ExpectAsync<OrderPlaced>(e => e.OrderId == orderId);
        Assert.Equal(sent.Envelope.MessageId, handled.Envelope.MessageId);
        Assert.Equal("herald", handled.Endpoint);
        Assert.Equal(25m, placed.As<OrderPlaced>().Amount);
        Assert.Equal(sent.Envelope.MessageId.ToString(), placed.Envelope.CausationId);
        Assert.True(await harness.Published.AnyAsync<OrderPlaced>(e => e.OrderId == orderId, TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task HandlerThatKeepsFailing_IsDeadLetteredAfterItsImmediateRetries()
    {
        await using var harness = await SampleHarness.StartAsync(more: h => h.ConfigureRetries<ChargeCard>(r => r.Immediate(2).Delayed(0, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1))));
        var orderId = Guid.NewGuid();

        await harness.SendAsync(new ChargeCard(orderId, 5000m));

        var deadLetter = await harness.DeadLettered.ExpectAsync<ChargeCard>(c => c.OrderId == orderId);
        Assert.Equal(3, deadLetter.DeadLetter.AttemptCount);
        Assert.Contains("declined", deadLetter.DeadLetter.ErrorMessage, StringComparison.Ordinal);
        var handled = await harness.Handled.ExpectAsync<ChargeCard>(HandlingOutcome.DeadLettered);
        Assert.Equal(3, handled.Failures.Count);
        Assert.All(handled.Failures, f => Assert.IsType<InvalidOperationException>(f));
        await harness.Handled.ExpectNoneAsync<ChargeCard>(c => c.OrderId != orderId);
    }

    [Fact]
    public async Task DelayedRedelivery_WaitsForTheFakeClock_ThenSucceeds()
    {
        var gateway = new CardGateway { Outages = 1 };
        await using var harness = await SampleHarness.StartAsync(gateway, h => h.ConfigureRetries<ChargeCard>(r => r.Immediate(0).Delayed(2, TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(1))));

        var sent = await harness.SendAsync(new ChargeCard(Guid.NewGuid(), 10m));

        var retrying = await harness.Handled.ExpectAsync<ChargeCard>(HandlingOutcome.Retrying);
        Assert.IsType<TimeoutException>(Assert.Single(retrying.Failures));
        var delay = Assert.NotNull(retrying.RedeliveryDelay);
        Assert.True(delay > TimeSpan.Zero);

        // Nothing is due until the clock moves: the host is idle, and the retry has not run.
        await harness.WaitForIdleAsync();
        Assert.Equal(1, gateway.Calls);

        harness.Time.Advance(delay);
        var settled = await harness.Handled.ExpectSettledAsync(sent.Envelope.MessageId);
        Assert.Equal(HandlingOutcome.Succeeded, settled.Outcome);
        Assert.Equal(2, settled.DeliveryAttempt);
        Assert.Equal(2, gateway.Calls);
    }

    [Fact]
    public async Task DelayedSend_IsDeliveredOnlyWhenTheClockReachesIt()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();

        await harness.SendAsync(new PlaceOrder(orderId, "ada", 1m), new Herald.Handling.DeliveryOptions { Delay = TimeSpan.FromHours(1) });
        await harness.Published.ExpectNoneAsync<OrderPlaced>();

        harness.Time.Advance(TimeSpan.FromHours(1));
        await harness.Published.ExpectAsync<OrderPlaced>(e => e.OrderId == orderId);
    }

    [Fact]
    public async Task WithTheOutbox_MessagesAHandlerPublishesAreObservedOnceTheRelaySendsThem()
    {
        await using var harness = await SampleHarness.StartAsync(more: h => h.UseOutbox());
        var orderId = Guid.NewGuid();

        await harness.SendAsync(new PlaceOrder(orderId, "ada", 3m));

        await harness.WaitForIdleAsync();
        var placed = Assert.Single(harness.Published.Select<OrderPlaced>());
        Assert.Equal(orderId, placed.As<OrderPlaced>().OrderId);
        Assert.Equal("order-placed", placed.Destination);
    }

    [Fact]
    public async Task UndecodableMessage_IsDeadLetteredAndObserved()
    {
        await using var harness = await SampleHarness.StartAsync();
        var transport = harness.Services.GetRequiredService<Herald.Transport.ITransport>();
        var envelope = new Herald.Messages.Envelope
        {
            MessageId = Guid.CreateVersion7(),
            MessageType = "place-order",
            Time = harness.Time.GetUtcNow(),
            ContentType = "application/json",
            Body = "{ not json"u8.ToArray(),
        };

        await transport.SendAsync("herald", envelope);

        var handled = await harness.Handled.ExpectSettledAsync(envelope.MessageId);
        Assert.Equal(HandlingOutcome.DeadLettered, handled.Outcome);
        Assert.Null(handled.Message);
        Assert.Single(harness.DeadLettered.All, d => d.Envelope.MessageId == envelope.MessageId);
    }

    [Fact]
    public async Task DuplicateTheInboxKnows_IsSkippedWithoutRunningTheHandler()
    {
        var gateway = new CardGateway();
        await using var harness = await SampleHarness.StartAsync(gateway, h => h.UseInbox());
        var first = await harness.SendAsync(new ChargeCard(Guid.NewGuid(), 5m));
        Assert.Equal(HandlingOutcome.Succeeded, (await harness.Handled.ExpectSettledAsync(first.Envelope.MessageId)).Outcome);

        // The same envelope again, as a broker redelivers one whose ack was lost.
        await harness.Services.GetRequiredService<Herald.Transport.ITransport>().SendAsync(first.Destination, first.Envelope);

        await harness.WaitForIdleAsync();
        Assert.Equal([HandlingOutcome.Succeeded, HandlingOutcome.Skipped], harness.Handled.All.Select(h => h.Outcome));
        Assert.Equal(1, gateway.Calls);
    }

    [Fact]
    public async Task AddHeraldTestHarness_TurnsAHostOfYourOwnIntoAHarness()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton(new CardGateway());
        builder.Services.AddHeraldTestHarness(h => OrderSagas.Configure(h.ConfigureTestHarness(o => o.StartTime = new DateTimeOffset(2031, 5, 1, 0, 0, 0, TimeSpan.Zero))));
        using var host = builder.Build();
        await host.StartAsync();
        try
        {
            var harness = host.Services.GetRequiredService<HeraldTestHarness>();
            Assert.Same(harness.Time, host.Services.GetRequiredService<TimeProvider>());
            Assert.Equal(2031, harness.Time.GetUtcNow().Year);

            await harness.SendAsync(new PlaceOrder(Guid.NewGuid(), "ada", 1m));
            await harness.Published.ExpectAsync<OrderPlaced>();
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task TransportConfiguredAfterTheHarness_FailsTheStart()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHeraldTestHarness(OrderSagas.Configure);
        builder.Services.AddHerald(h => h.UseInMemoryTransport(InMemoryTransportOptions.Default));
        using var host = builder.Build();

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync());
        Assert.Contains("AddHeraldTestHarness", error.Message, StringComparison.Ordinal);
    }

    // docs/testing.md's settings table states these defaults.
    [Fact]
    public async Task Defaults_WaitTenSeconds_AndStartTheClockAt2030()
    {
        await using var harness = await HeraldTestHarness.StartAsync();

        Assert.Equal(TimeSpan.FromSeconds(10), harness.DefaultTimeout);
        Assert.Equal(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero), harness.Time.GetUtcNow());
    }

    // docs/testing.md: the dead-letter store, like the transport, must not be replaced after the harness wrapped it.
    [Fact]
    public async Task DeadLetterStoreConfiguredAfterTheHarness_FailsTheStart()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHeraldTestHarness(OrderSagas.Configure);
        builder.Services.AddSingleton<IDeadLetterStore>(new InMemoryDeadLetterStore());
        using var host = builder.Build();

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync());
        Assert.Contains("AddHeraldTestHarness", error.Message, StringComparison.Ordinal);
    }
}
