using Herald.Sagas;
using Herald.Testing.Tests.Sample;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Testing.Tests;

/// <summary>Saga scenarios: a state machine given events, when a message, then a state and commands; an orchestrated saga run with its steps observed.</summary>
public sealed class SagaTests
{
    // A machine whose transition throws for a negative amount, and which correlates an event the host can never read.
    private static readonly SagaStateMachine<FulfilmentState> Fragile = SagaStateMachine.Create<FulfilmentState>("fragile", m => m
        .Correlate<OrderPlaced>(e => e.OrderId.ToString())
        .Correlate<UnreadableOrderPlaced>(e => e.OrderId.ToString())
        .Initially<OrderPlaced>("Done", (_, e) => e.Amount < 0 ? throw new InvalidOperationException("A negative amount.") : ValueTask.CompletedTask)
        .Initially<UnreadableOrderPlaced>("Done")
        .Final("Done"));

    [Fact]
    public async Task StateMachine_WhenOrderPlaced_StartsReservingAndSendsReserveStockToInventory()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();

        var result = await harness.Scenario(OrderSagas.Machine).WhenAsync(new OrderPlaced(orderId, 40m));

        var saga = result.ExpectState("Reserving");
        Assert.Equal(SagaStatus.Running, saga.Status);
        Assert.Equal(40m, saga.Data.Amount);
        Assert.Equal(orderId, result.ExpectSent<ReserveStock>().OrderId);
        Assert.Equal(Routes.Inventory, Assert.Single(result.Sent).Destination);
        Assert.Empty(saga.Instance.Timeouts);
        Assert.Empty(result.Published);
    }

    [Fact]
    public async Task StateMachine_GivenPlacedAndReserved_WhenPaymentTaken_CompletesAndPublishesOrderCompleted()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();
        var scenario = harness.Scenario(OrderSagas.Machine);

        await scenario.GivenAsync([new OrderPlaced(orderId, 40m), new StockReserved(orderId)]);
        var result = await scenario.WhenAsync(new PaymentTaken(orderId));

        var saga = result.ExpectState("Completed");
        Assert.Equal(SagaStatus.Completed, saga.Status);
        Assert.Equal(1, saga.Data.Reservations);
        Assert.Equal(orderId, result.ExpectPublished<OrderCompleted>().OrderId);
        Assert.Empty(result.Sent);
    }

    [Fact]
    public async Task StateMachine_PaymentTimeout_FiresWhenTheFakeClockReachesIt_AndCancelsTheOrder()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();
        var scenario = harness.Scenario(OrderSagas.Machine);
        await scenario.GivenAsync([new OrderPlaced(orderId, 40m)]);

        var result = await scenario.WhenAsync(new StockReserved(orderId));
        var timeout = Assert.Single(result.ExpectState("Charging").Instance.Timeouts);
        Assert.Equal("payment", timeout.Name);
        Assert.Equal(harness.Time.GetUtcNow() + OrderSagas.PaymentWindow, timeout.DueAt);

        await harness.AdvanceTimeAsync(OrderSagas.PaymentWindow - TimeSpan.FromSeconds(1));
        Assert.Equal("Charging", (await scenario.LoadAsync(orderId.ToString()))!.State);

        await harness.AdvanceTimeAsync(TimeSpan.FromSeconds(1));
        var cancelled = await scenario.LoadAsync(orderId.ToString());
        Assert.Equal("Cancelled", cancelled!.State);
        Assert.Empty(cancelled.Instance.Timeouts);
        await harness.Sent.ExpectAsync<ReleaseStock>(c => c.OrderId == orderId);
    }

    [Fact]
    public async Task StateMachine_PaymentTakenInTime_CancelsTheTimeout_WhichThenNeverFires()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();
        var scenario = harness.Scenario(OrderSagas.Machine);
        await scenario.GivenAsync([new OrderPlaced(orderId, 40m), new StockReserved(orderId)]);

        var result = await scenario.WhenAsync(new PaymentTaken(orderId));
        Assert.Empty(result.ExpectState("Completed").Instance.Timeouts);

        await harness.AdvanceTimeAsync(OrderSagas.PaymentWindow * 2);
        Assert.Equal("Completed", (await scenario.LoadAsync(orderId.ToString()))!.State);
        await harness.Sent.ExpectNoneAsync<ReleaseStock>();
    }

    [Fact]
    public async Task StateMachine_EventTheStateDoesNotExpect_ChangesNothingAndSendsNothing()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();
        var scenario = harness.Scenario(OrderSagas.Machine);
        await scenario.GivenAsync([new OrderPlaced(orderId, 40m)]);

        var result = await scenario.WhenAsync(new PaymentTaken(orderId));

        Assert.Equal(1, result.ExpectState("Reserving").Instance.Version);
        result.ExpectNothingSent();
    }

    [Fact]
    public async Task StateMachine_EventForAMissingInstance_IsDeadLetteredByItsPolicy()
    {
        await using var harness = await SampleHarness.StartAsync();

        var result = await harness.Scenario(OrderSagas.Machine).WhenFailingAsync(new StockReserved(Guid.NewGuid()));

        Assert.Equal(Herald.Testing.Observing.HandlingOutcome.DeadLettered, result.Handled.Outcome);
        Assert.Null(result.Saga);
        var deadLetter = await harness.DeadLettered.ExpectAsync<StockReserved>();
        Assert.Equal(Herald.Reliability.DeadLetters.DeadLetterCause.NotRetryable, deadLetter.DeadLetter.Cause);
    }

    [Fact]
    public async Task StateMachine_WhenFailingAsync_WhenTheTransitionFails_ReturnsRetryingWithoutWaitingForTheClock_ThenDeadLettersWhenItComes()
    {
        await using var harness = await StartFragileAsync(delayedRetries: 1);
        var orderId = Guid.NewGuid();

        var result = await harness.Scenario(Fragile).WhenFailingAsync(new OrderPlaced(orderId, -1m));

        Assert.Equal(Herald.Testing.Observing.HandlingOutcome.Retrying, result.Handled.Outcome);
        Assert.Equal("A negative amount.", Assert.Single(result.Handled.Failures).Message);
        Assert.Null(result.Saga);
        harness.Time.Advance(result.Handled.RedeliveryDelay!.Value);
        var deadLetter = await harness.DeadLettered.ExpectAsync<OrderPlaced>(e => e.OrderId == orderId);
        Assert.Equal("A negative amount.", deadLetter.DeadLetter.ErrorMessage);
    }

    [Theory]
    [InlineData(1, "Retrying")]
    [InlineData(0, "DeadLettered")]
    public async Task StateMachine_WhenTheTransitionThrows_WhenAsyncThrowsWithItsException(int delayedRetries, string outcome)
    {
        await using var harness = await StartFragileAsync(delayedRetries);

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Scenario(Fragile).WhenAsync(new OrderPlaced(Guid.NewGuid(), -1m)));

        Assert.Contains("When OrderPlaced was not handled", error.Message, StringComparison.Ordinal);
        Assert.Contains($"{outcome} (InvalidOperationException: A negative amount.)", error.Message, StringComparison.Ordinal);
        Assert.Contains("WhenFailingAsync", error.Message, StringComparison.Ordinal);
        var cause = Assert.IsType<InvalidOperationException>(error.InnerException);
        Assert.Equal("A negative amount.", cause.Message);
    }

    [Fact]
    public async Task StateMachine_WhenAnEventForAMissingInstanceIsDeadLettered_WhenAsyncThrowsWithTheReason()
    {
        await using var harness = await SampleHarness.StartAsync();

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Scenario(OrderSagas.Machine).WhenAsync(new StockReserved(Guid.NewGuid())));

        Assert.Contains("When StockReserved was not handled", error.Message, StringComparison.Ordinal);
        Assert.Contains("DeadLettered (SagaMessageRejectedException: Saga 'order-fulfilment' has no instance", error.Message, StringComparison.Ordinal);
        Assert.IsType<SagaMessageRejectedException>(error.InnerException);
    }

    [Fact]
    public async Task StateMachine_WhenTheHostCannotReadTheEvent_WhenAsyncThrowsWithTheDeadLetterReason()
    {
        await using var harness = await StartFragileAsync(delayedRetries: 0);

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Scenario(Fragile).WhenAsync(new UnreadableOrderPlaced(Guid.NewGuid())));

        Assert.Contains("When UnreadableOrderPlaced was not handled", error.Message, StringComparison.Ordinal);
        Assert.Contains("DeadLettered (Undecodable:", error.Message, StringComparison.Ordinal);
        Assert.Contains("This body is never readable.", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task StateMachine_GivenAnEventWhoseTransitionThrows_GivenAsyncThrowsWithItsException()
    {
        await using var harness = await StartFragileAsync(delayedRetries: 0);

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Scenario(Fragile).GivenAsync([new OrderPlaced(Guid.NewGuid(), -1m)]));

        Assert.Contains("Given OrderPlaced was not handled", error.Message, StringComparison.Ordinal);
        Assert.Equal("A negative amount.", Assert.IsType<InvalidOperationException>(error.InnerException).Message);
    }

    [Fact]
    public async Task OrchestratedSaga_RunsEveryStepInOrder_AndSendsTheirCommands()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();

        var run = await harness.RunSagaAsync(OrderSagas.Orchestrated, orderId.ToString(), new FulfilmentData { OrderId = orderId, Amount = 30m });

        run.ExpectStatus(SagaStatus.Completed).ExpectSteps(["reserve-stock", "charge-payment", "ship"]);
        Assert.Equal($"shipment-{orderId:N}", run.Data.ShipmentId);
        Assert.Equal(30m, run.ExpectSent<ChargePayment>().Amount);
        Assert.Equal(
            [typeof(ReserveStock), typeof(ChargePayment), typeof(ShipOrder)],
            run.Sent.Select(m => m.Message!.GetType()));
    }

    [Fact]
    public async Task OrchestratedSaga_SentAndPublished_HoldWhatItsStepsSent_NotWhatOthersSentWithItsIdAsCorrelation()
    {
        var placing = SagaDefinition.Create<FulfilmentData>("placing", s => s
            .Step("place", ctx => ctx.SendAsync(new PlaceOrder(ctx.Data.OrderId, "ada", ctx.Data.Amount)), retry: Herald.Reliability.Retry.RetryPolicy.Create(r => r.NoRetries())));
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();

        // Sent by the test before the run, with the saga's id as its correlation.
        await harness.SendAsync(new ReserveStock(orderId), new Herald.Handling.DeliveryOptions { CorrelationId = orderId.ToString() });
        var run = await harness.RunSagaAsync(placing, orderId.ToString(), new FulfilmentData { OrderId = orderId, Amount = 5m });

        // The host's PlaceOrder handler publishes OrderPlaced, which carries on the saga's correlation: the saga did not publish it.
        var placed = await harness.Published.ExpectAsync<OrderPlaced>(e => e.OrderId == orderId);
        Assert.Equal(orderId.ToString(), placed.Envelope.CorrelationId);
        Assert.Equal(typeof(PlaceOrder), Assert.Single(run.Sent).Message!.GetType());
        Assert.Empty(run.Published);
    }

    [Fact]
    public async Task OrchestratedSaga_WhenAStepFails_CompensatesTheCompletedStepsInReverse()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();

        var run = await harness.RunSagaAsync(
            OrderSagas.Orchestrated,
            orderId.ToString(),
            new FulfilmentData { OrderId = orderId, Amount = 30m },
            faults => faults.FailStep("ship", new InvalidOperationException("No courier.")));

        run.ExpectStatus(SagaStatus.Compensated).ExpectSteps(["reserve-stock", "charge-payment"], compensated: ["charge-payment", "reserve-stock"]);
        var failed = Assert.Single(run.Steps, s => !s.Succeeded);
        Assert.Equal("ship", failed.Step);
        Assert.Equal("No courier.", failed.Failure!.Message);
        Assert.Contains("No courier.", run.Instance.Error, StringComparison.Ordinal);
        Assert.Equal(30m, run.ExpectSent<RefundPayment>().Amount);
        run.ExpectSent<ReleaseStock>();
        Assert.DoesNotContain(run.Sent, m => m.Message is ShipOrder);
    }

    [Fact]
    public async Task OrchestratedSaga_WhoseOwnStepDeclines_CompensatesOnlyWhatCompleted()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();

        var run = await harness.RunSagaAsync(OrderSagas.Orchestrated, orderId.ToString(), new FulfilmentData { OrderId = orderId, Amount = 5000m });

        run.ExpectStatus(SagaStatus.Compensated).ExpectSteps(["reserve-stock"], compensated: ["reserve-stock"]);
        Assert.Contains("Payment declined.", run.Instance.Error, StringComparison.Ordinal);
        Assert.DoesNotContain(run.Sent, m => m.Message is RefundPayment or ChargePayment);
    }

    [Fact]
    public async Task OrchestratedSaga_WhoseCompensationKeepsFailing_IsParkedAsFailed()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();

        var run = await harness.RunSagaAsync(
            OrderSagas.Orchestrated,
            orderId.ToString(),
            new FulfilmentData { OrderId = orderId, Amount = 30m },
            faults => faults.FailStep("ship").FailCompensation("charge-payment"));

        run.ExpectStatus(SagaStatus.Failed).ExpectSteps(["reserve-stock", "charge-payment"]);
        Assert.Contains("Compensation of step 'charge-payment' failed", run.Instance.Error, StringComparison.Ordinal);
        var stored = await harness.Services.GetRequiredService<ISagaStore>().LoadAsync(OrderSagas.Orchestrated.Name, orderId.ToString());
        Assert.Equal(SagaStatus.Failed, stored!.Status);
    }

    // A handler that starts an orchestrated saga in its unit of work (StartInAsync) leaves it to the host's saga runner,
    // in the background: the host is not idle while that run goes on, or ExpectNoneAsync would pass before the run sends.
    [Fact]
    public async Task WaitForIdle_WaitsForAnOrchestratedSagaAHandlerStarted()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = HeldShipping(gate.Task, entered);
        await using var harness = await StartShippingForEachOrderAsync(held);
        var orderId = Guid.NewGuid();

        await harness.SendAsync(new PlaceOrder(orderId, "ada", 1m));
        await entered.Task.WaitAsync(harness.DefaultTimeout);

        var busy = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.WaitForIdleAsync(TimeSpan.FromMilliseconds(300)));
        Assert.Contains("saga", busy.Message, StringComparison.Ordinal);
        gate.SetResult();
        await harness.WaitForIdleAsync();
        Assert.Equal(orderId, Assert.Single(harness.Sent.Select<ShipOrder>()).As<ShipOrder>().OrderId);
        Assert.Equal(SagaStatus.Completed, (await harness.Services.GetRequiredService<ISagaStore>().LoadAsync(held.Name, orderId.ToString()))!.Status);
    }

    [Fact]
    public async Task ExpectNoneAsync_FailsForAMessageAnOrchestratedSagaAHandlerStartedSends()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var harness = await StartShippingForEachOrderAsync(HeldShipping(gate.Task, entered: null));
        await harness.SendAsync(new PlaceOrder(Guid.NewGuid(), "ada", 1m));

        // Released only once the expectation has started waiting: it must see what the saga sends after that.
        var none = harness.Sent.ExpectNoneAsync<ShipOrder>();
        gate.SetResult();

        await Assert.ThrowsAsync<HarnessAssertionException>(() => none);
    }

    [Fact]
    public async Task WaitForIdle_DoesNotWaitForAStartedSagasDelayedRetry_WhichAdvanceTimeAsyncThenRuns()
    {
        var retried = OrderSagas.ShippingFailingFirst("retried-shipping", failures: 1, delayedRetries: 1);
        await using var harness = await StartShippingForEachOrderAsync(retried);
        var orderId = Guid.NewGuid();
        var store = harness.Services.GetRequiredService<ISagaStore>();

        await harness.SendAsync(new PlaceOrder(orderId, "ada", 1m));
        await harness.WaitForIdleAsync();
        Assert.Equal(SagaStatus.Running, (await store.LoadAsync(retried.Name, orderId.ToString()))!.Status);
        Assert.Empty(harness.Sent.Select<ShipOrder>());

        await harness.AdvanceTimeAsync(TimeSpan.FromMinutes(1));
        Assert.Single(harness.Sent.Select<ShipOrder>());
        Assert.Equal(SagaStatus.Completed, (await store.LoadAsync(retried.Name, orderId.ToString()))!.Status);
    }

    [Fact]
    public async Task OrchestratedSaga_AFaultForSomeRuns_IsRetriedByTheStepsPolicy()
    {
        var retried = SagaDefinition.Create<FulfilmentData>("retried", s => s
            .Step("reserve-stock", ctx => ctx.SendAsync(new ReserveStock(ctx.Data.OrderId)), retry: Herald.Reliability.Retry.RetryPolicy.Create(r => r.Immediate(2).Delayed(0, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1)))));
        await using var harness = await SampleHarness.StartAsync();

        var run = await harness.RunSagaAsync(retried, "r-1", new FulfilmentData { OrderId = Guid.NewGuid() }, faults => faults.FailStep("reserve-stock", times: 2));

        run.ExpectStatus(SagaStatus.Completed).ExpectSteps(["reserve-stock"]);
        Assert.Equal([1, 2, 3], run.Steps.Select(s => s.Attempt));
        Assert.Single(run.Sent);
    }

    // Waits for the gate in its first step, then ships.
    private static SagaDefinition<FulfilmentData> HeldShipping(Task gate, TaskCompletionSource? entered) =>
        SagaDefinition.Create<FulfilmentData>("held-shipping", s => s
            .Step("wait", async ctx =>
            {
                entered?.TrySetResult();
                await gate.WaitAsync(ctx.CancellationToken);
            })
            .Step("ship", ctx => ctx.SendAsync(new ShipOrder(ctx.Data.OrderId)), retry: Herald.Reliability.Retry.RetryPolicy.Create(r => r.NoRetries())));

    private static Task<HeraldTestHarness> StartShippingForEachOrderAsync(SagaDefinition<FulfilmentData> shipping) =>
        HeraldTestHarness.StartAsync(h => h
            .AddMessageTypesFromAssembly(typeof(PlaceOrder).Assembly)
            .AddSaga(shipping)
            .AddHandler<StartsShipping>()
            .Route<ShipOrder>(Routes.Shipping));

    /// <summary>Starts the orchestrated shipping saga registered in the host for each order, in the handler's unit of work.</summary>
    private sealed class StartsShipping(SagaOrchestrator orchestrator, SagaDefinition<FulfilmentData> shipping) : Herald.Handling.IMessageHandler<PlaceOrder>
    {
        public async ValueTask HandleAsync(PlaceOrder message, Herald.Handling.MessageContext context, CancellationToken cancellationToken) =>
            await orchestrator.StartInAsync(shipping, message.OrderId.ToString(), new FulfilmentData { OrderId = message.OrderId, Amount = message.Amount }, context.UnitOfWork, cancellationToken);
    }

    private static Task<HeraldTestHarness> StartFragileAsync(int delayedRetries) =>
        HeraldTestHarness.StartAsync(h => h
            .AddMessageTypesFromAssembly(typeof(OrderPlaced).Assembly)
            .AddSaga(Fragile)
            .ConfigureRetries(r => r.Immediate(0).Delayed(delayedRetries, TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(1))));
}

/// <summary>An event whose body the host cannot read back: its converter writes it, but refuses to read it.</summary>
[Herald.Messages.MessageType("unreadable-order-placed")]
[System.Text.Json.Serialization.JsonConverter(typeof(UnreadableOrderPlaced.Converter))]
public sealed record UnreadableOrderPlaced(Guid OrderId)
{
    internal sealed class Converter : System.Text.Json.Serialization.JsonConverter<UnreadableOrderPlaced>
    {
        public override UnreadableOrderPlaced Read(ref System.Text.Json.Utf8JsonReader reader, Type typeToConvert, System.Text.Json.JsonSerializerOptions options) =>
            throw new System.Text.Json.JsonException("This body is never readable.");

        public override void Write(System.Text.Json.Utf8JsonWriter writer, UnreadableOrderPlaced value, System.Text.Json.JsonSerializerOptions options)
        {
            writer.WriteStartObject();
            writer.WriteString("orderId", value.OrderId);
            writer.WriteEndObject();
        }
    }
}
