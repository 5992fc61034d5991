using Herald.Messages;
using Herald.Sagas;

namespace Herald.CrashChild;

/// <summary>
/// The state machine of the saga-timeout-sqlite crash: an order placed waits for its payment, with a payment timeout of one
/// second. Compiled into the child and into the test that restarts after it (linked), so both run the same machine.
/// </summary>
internal static class CrashOrders
{
    public const string Name = "crash-orders";

    public const string TimeoutType = "crash-payment-timed-out";

    public static SagaStateMachine<CrashOrderSaga> Machine() =>
        SagaStateMachine.Create<CrashOrderSaga>(Name, m => m
            .Correlate<CrashOrderPlaced>(e => e.OrderId)
            .Correlate<CrashPaymentTimedOut>(e => e.OrderId)
            .Initially<CrashOrderPlaced>("AwaitingPayment", async (saga, placed) =>
                await saga.ScheduleTimeoutAsync("payment", new CrashPaymentTimedOut(placed.OrderId), TimeSpan.FromSeconds(1)))
            .During("AwaitingPayment", s => s.When<CrashPaymentTimedOut>("Expired"))
            .Final("Expired"));
}

/// <summary>The machine's data (nothing the test reads; it reads the state).</summary>
internal sealed class CrashOrderSaga
{
    public string Note { get; set; } = "crash";
}

/// <summary>Starts an instance, which schedules its payment timeout.</summary>
[MessageType("crash-order-placed")]
internal sealed record CrashOrderPlaced(string OrderId);

/// <summary>The payment timeout.</summary>
[MessageType(CrashOrders.TimeoutType)]
internal sealed record CrashPaymentTimedOut(string OrderId);
