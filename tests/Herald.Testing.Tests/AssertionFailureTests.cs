using Herald.Sagas;
using Herald.Testing.Observing;
using Herald.Testing.Tests.Sample;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Testing.Tests;

/// <summary>
/// The harness's expectations fail when what they expect did not happen, with a message that says what was observed
/// instead: an assertion that cannot fail would let every test that uses it pass.
/// </summary>
public sealed class AssertionFailureTests
{
    // Short, since these waits are meant to run out; what they wait for never comes.
    private static readonly TimeSpan Short = TimeSpan.FromMilliseconds(300);

    [Fact]
    public async Task ExpectAsync_WhenNoMatchingMessageComes_ThrowsListingWhatWasObserved()
    {
        await using var harness = await SampleHarness.StartAsync();
        var placed = Guid.NewGuid();
        await harness.SendAsync(new PlaceOrder(placed, "ada", 1m));
        await harness.Published.ExpectAsync<OrderPlaced>(e => e.OrderId == placed);

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Published.ExpectAsync<OrderPlaced>(e => e.OrderId == Guid.Empty, Short));

        Assert.Contains("Expected published OrderPlaced", error.Message, StringComparison.Ordinal);
        Assert.Contains("Observed published (1): OrderPlaced", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ExpectAsync_ForAnotherMessageType_DoesNotMatchWhatWasPublished()
    {
        await using var harness = await SampleHarness.StartAsync();
        await harness.SendAsync(new PlaceOrder(Guid.NewGuid(), "ada", 1m));
        await harness.Published.ExpectAsync<OrderPlaced>();

        await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Published.ExpectAsync<OrderCompleted>(timeout: Short));
        await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Sent.ExpectAsync<OrderPlaced>(timeout: Short));
    }

    [Fact]
    public async Task ExpectAsync_WhoseConditionThrows_FailsWithThatException()
    {
        await using var harness = await SampleHarness.StartAsync();
        await harness.SendAsync(new PlaceOrder(Guid.NewGuid(), "ada", 1m));
        await harness.Published.ExpectAsync<OrderPlaced>();

        // On a message observed already, and on one observed while the expectation waits.
        await Assert.ThrowsAsync<FormatException>(() => harness.Published.ExpectAsync<OrderPlaced>(_ => throw new FormatException("bad condition")));
        var waiting = harness.Published.ExpectAsync<OrderPlaced>(e => e.Amount == 2m ? throw new FormatException("bad condition") : false);
        await harness.SendAsync(new PlaceOrder(Guid.NewGuid(), "ada", 2m));
        await Assert.ThrowsAsync<FormatException>(() => waiting);
    }

    [Fact]
    public async Task AnyAsync_WhenNothingMatches_AnswersFalse()
    {
        await using var harness = await SampleHarness.StartAsync();

        Assert.False(await harness.Published.AnyAsync<OrderPlaced>(timeout: Short));
    }

    [Fact]
    public async Task ExpectNoneAsync_WhenOneWasPublished_Throws()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();
        await harness.SendAsync(new PlaceOrder(orderId, "ada", 1m));

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Published.ExpectNoneAsync<OrderPlaced>());

        Assert.Contains($"Expected no published OrderPlaced, but observed 1", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task HandledExpectAsync_WithAnOutcomeTheDeliveryDidNotHave_Throws()
    {
        await using var harness = await SampleHarness.StartAsync(more: h => h.ConfigureRetries<ChargeCard>(r => r.NoRetries()));
        await harness.SendAsync(new ChargeCard(Guid.NewGuid(), 5000m));
        await harness.Handled.ExpectAsync<ChargeCard>(HandlingOutcome.DeadLettered);

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Handled.ExpectAsync<ChargeCard>(HandlingOutcome.Succeeded, timeout: Short));

        Assert.Contains("DeadLettered (InvalidOperationException: Card declined", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DeadLetteredExpectAsync_WhenTheMessageSucceeded_Throws()
    {
        await using var harness = await SampleHarness.StartAsync();
        var sent = await harness.SendAsync(new ChargeCard(Guid.NewGuid(), 5m));
        Assert.Equal(HandlingOutcome.Succeeded, (await harness.Handled.ExpectSettledAsync(sent.Envelope.MessageId)).Outcome);

        await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.DeadLettered.ExpectAsync<ChargeCard>(timeout: Short));
    }

    [Fact]
    public async Task WaitForIdleAsync_WhileAHandlerRuns_ThrowsSayingWhatIsUnderWay_ThenReturnsOnceItEnds()
    {
        var gateway = new CardGateway { Holds = true };
        await using var harness = await SampleHarness.StartAsync(gateway);
        var sent = await harness.SendAsync(new ChargeCard(Guid.NewGuid(), 5m));
        await gateway.Entered.WaitAsync(TimeSpan.FromSeconds(10));

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.WaitForIdleAsync(Short));
        Assert.Contains("1 deliveries running", error.Message, StringComparison.Ordinal);

        gateway.Release();
        await harness.WaitForIdleAsync();
        Assert.Equal(HandlingOutcome.Succeeded, Assert.Single(harness.Handled.All).Outcome);
        Assert.Equal(sent.Envelope.MessageId, harness.Handled.All[0].Envelope.MessageId);
    }

    [Fact]
    public async Task ObservationAs_AnotherType_Throws()
    {
        await using var harness = await SampleHarness.StartAsync();
        var sent = await harness.SendAsync(new PlaceOrder(Guid.NewGuid(), "ada", 1m));

        Assert.Throws<HarnessAssertionException>(() => sent.As<OrderPlaced>());
        Assert.Equal("ada", sent.As<PlaceOrder>().Customer);
    }

    [Fact]
    public async Task ScenarioResult_WrongStateOrCommand_Throws()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();

        var result = await harness.Scenario(OrderSagas.Machine).WhenAsync(new OrderPlaced(orderId, 40m));

        var state = Assert.Throws<HarnessAssertionException>(() => result.ExpectState("Charging"));
        Assert.Contains("in state 'Charging', but it is in 'Reserving'", state.Message, StringComparison.Ordinal);
        var command = Assert.Throws<HarnessAssertionException>(() => result.ExpectSent<ChargePayment>());
        Assert.Contains("but found 0. All sent: ReserveStock", command.Message, StringComparison.Ordinal);
        Assert.Throws<HarnessAssertionException>(() => result.ExpectSent<ReserveStock>(c => c.OrderId != orderId));
        Assert.Throws<HarnessAssertionException>(() => result.ExpectPublished<ReserveStock>());
        Assert.Throws<HarnessAssertionException>(result.ExpectNothingSent);
    }

    [Fact]
    public async Task ScenarioResult_WithNoInstance_ExpectStateThrows()
    {
        await using var harness = await SampleHarness.StartAsync();

        var result = await harness.Scenario(OrderSagas.Machine).WhenAsync(new PaymentTaken(Guid.NewGuid()));

        Assert.Null(result.Saga);
        var error = Assert.Throws<HarnessAssertionException>(() => result.ExpectState("Completed"));
        Assert.Contains("there is no instance", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ScenarioGiven_AnEventThatIsDeadLettered_Throws()
    {
        await using var harness = await SampleHarness.StartAsync();

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Scenario(OrderSagas.Machine).GivenAsync([new StockReserved(Guid.NewGuid())]));

        Assert.Contains("Given StockReserved was not handled", error.Message, StringComparison.Ordinal);
        Assert.Contains("DeadLettered", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ScenarioWhenFailing_AMessageThatIsHandled_Throws()
    {
        await using var harness = await SampleHarness.StartAsync();

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Scenario(OrderSagas.Machine).WhenFailingAsync(new OrderPlaced(Guid.NewGuid(), 40m)));

        Assert.Contains("Expected OrderPlaced to fail, but it was handled: OrderPlaced", error.Message, StringComparison.Ordinal);
        Assert.Contains(": Succeeded", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Scenario_AMessageTheMachineDoesNotCorrelate_IsRefused()
    {
        await using var harness = await SampleHarness.StartAsync();

        var error = await Assert.ThrowsAsync<ArgumentException>(() => harness.Scenario(OrderSagas.Machine).WhenAsync(new PlaceOrder(Guid.NewGuid(), "ada", 1m)));

        Assert.Contains("PlaceOrder is not an event of saga 'order-fulfilment'", error.Message, StringComparison.Ordinal);
        Assert.Empty(harness.Published.All);
    }

    [Fact]
    public async Task Scenario_ForAMachineTheHarnessDoesNotRun_IsRefused()
    {
        // Its event is handled in the host (by the registered machine), so without the check a step "passed" with no instance.
        var unregistered = SagaStateMachine.Create<FulfilmentData>("unregistered", m => m
            .Correlate<OrderPlaced>(e => e.OrderId.ToString())
            .Initially<OrderPlaced>("Started")
            .Final("Started"));
        await using var harness = await SampleHarness.StartAsync();

        var error = Assert.Throws<ArgumentException>(() => harness.Scenario(unregistered));

        Assert.Contains("Saga 'unregistered' is not registered in the harness's host", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ScenarioWhen_AMessageNotHandledInTime_ThrowsNamingItsTypeAndEndpoint()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = SagaStateMachine.Create<FulfilmentState>("held", m => m
            .Correlate<OrderPlaced>(e => e.OrderId.ToString())
            .Initially<OrderPlaced>("Done", async (_, _) => await gate.Task)
            .Final("Done"));
        await using var harness = await HeraldTestHarness.StartAsync(h => h
            .AddMessageTypesFromAssembly(typeof(OrderPlaced).Assembly)
            .AddSaga(held)
            .ConfigureTestHarness(o => o.DefaultTimeout = Short));
        try
        {
            var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.Scenario(held).WhenAsync(new OrderPlaced(Guid.NewGuid(), 1m)));

            Assert.Contains("Expected handled OrderPlaced ", error.Message, StringComparison.Ordinal);
            Assert.Contains("(handled at 'herald') within", error.Message, StringComparison.Ordinal);
        }
        finally
        {
            gate.SetResult();
        }
    }

    [Fact]
    public async Task SagaRun_OtherStatusOrSteps_Throws()
    {
        await using var harness = await SampleHarness.StartAsync();
        var orderId = Guid.NewGuid();
        var run = await harness.RunSagaAsync(OrderSagas.Orchestrated, orderId.ToString(), new FulfilmentData { OrderId = orderId, Amount = 30m }, f => f.FailStep("ship"));

        var status = Assert.Throws<HarnessAssertionException>(() => run.ExpectStatus(SagaStatus.Completed));
        Assert.Contains("to end Completed, but it ended Compensated", status.Message, StringComparison.Ordinal);
        Assert.Contains("ship#1 failed", status.Message, StringComparison.Ordinal);
        Assert.Throws<HarnessAssertionException>(() => run.ExpectSteps(["reserve-stock", "charge-payment", "ship"]));
        Assert.Throws<HarnessAssertionException>(() => run.ExpectSteps(["reserve-stock", "charge-payment"], compensated: ["reserve-stock", "charge-payment"]));
        Assert.Throws<HarnessAssertionException>(() => run.ExpectSent<ShipOrder>());
    }

    [Fact]
    public async Task SagaFaults_ForAStepTheSagaDoesNotHave_AreRefused()
    {
        await using var harness = await SampleHarness.StartAsync();

        var error = await Assert.ThrowsAsync<ArgumentException>(() => harness.RunSagaAsync(OrderSagas.Orchestrated, "x", new FulfilmentData(), f => f.FailStep("pack")));

        Assert.Contains("no step 'pack'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunSagaAsync_WhenAStepWaitsOnADelayedRetry_FailsAtTheDeadlineSayingWhy()
    {
        var waiting = SagaDefinition.Create<FulfilmentData>("waits", s => s
            .Step("reserve-stock", _ => ValueTask.CompletedTask, retry: Herald.Reliability.Retry.RetryPolicy.Create(r => r.Immediate(0).Delayed(1, TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(1)))));
        await using var harness = await HeraldTestHarness.StartAsync(h => h.ConfigureTestHarness(o => o.DefaultTimeout = TimeSpan.FromSeconds(2)));

        var error = await Assert.ThrowsAsync<HarnessAssertionException>(() => harness.RunSagaAsync(waiting, "w-1", new FulfilmentData(), f => f.FailStep("reserve-stock", times: 1)));

        Assert.Contains("fake clock", error.Message, StringComparison.Ordinal);
        Assert.Contains("reserve-stock#1 failed (Injected failure", error.Message, StringComparison.Ordinal);
    }
}
