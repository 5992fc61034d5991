using Herald.Sagas;

namespace Herald.Testing.Tests.Sample;

public sealed class FulfilmentState
{
    public Guid OrderId { get; set; }

    public decimal Amount { get; set; }

    public int Reservations { get; set; }
}

public sealed class FulfilmentData
{
    public Guid OrderId { get; set; }

    public decimal Amount { get; set; }

    public string? ShipmentId { get; set; }
}

public static class OrderSagas
{
    /// <summary>How long a reserved order waits for its payment before it is cancelled.</summary>
    public static TimeSpan PaymentWindow { get; } = TimeSpan.FromMinutes(15);

    /// <summary>The order as a state machine: placed, stock reserved, payment taken (or not within the payment window).</summary>
    public static SagaStateMachine<FulfilmentState> Machine { get; } = SagaStateMachine.Create<FulfilmentState>("order-fulfilment", m => m
        .Correlate<OrderPlaced>(e => e.OrderId.ToString())
        .Correlate<StockReserved>(e => e.OrderId.ToString(), whenMissing: MissingInstance.DeadLetter)
        .Correlate<PaymentTaken>(e => e.OrderId.ToString())
        .Correlate<PaymentTimedOut>(e => e.OrderId.ToString())
        .Initially<OrderPlaced>("Reserving", async (saga, placed) =>
        {
            saga.Data.OrderId = placed.OrderId;
            saga.Data.Amount = placed.Amount;
            await saga.SendAsync(new ReserveStock(placed.OrderId));
        })
        .During("Reserving", s => s.When<StockReserved>("Charging", async (saga, _) =>
        {
            saga.Data.Reservations++;
            await saga.SendAsync(new ChargePayment(saga.Data.OrderId, saga.Data.Amount));
            await saga.ScheduleTimeoutAsync("payment", new PaymentTimedOut(saga.Data.OrderId), PaymentWindow);
        }))
        .During("Charging", s => s
            .When<PaymentTaken>("Completed", (saga, _) =>
            {
                saga.CancelTimeout("payment");
                return saga.PublishAsync(new OrderCompleted(saga.Data.OrderId));
            })
            .When<PaymentTimedOut>("Cancelled", (saga, _) => saga.SendAsync(new ReleaseStock(saga.Data.OrderId))))
        .Final("Completed", "Cancelled"));

    /// <summary>
    /// The order as an orchestrated saga: reserve stock, charge the payment (declined over 1000), ship. Reserving and
    /// charging are undone by releasing and refunding.
    /// </summary>
    public static SagaDefinition<FulfilmentData> Orchestrated { get; } = SagaDefinition.Create<FulfilmentData>("order-shipping", s => s
        .Step("reserve-stock", ctx => ctx.SendAsync(new ReserveStock(ctx.Data.OrderId)),
              compensate: ctx => ctx.SendAsync(new ReleaseStock(ctx.Data.OrderId)))
        .Step("charge-payment", async ctx =>
              {
                  if (ctx.Data.Amount > 1000m)
                  {
                      throw new InvalidOperationException("Payment declined.");
                  }

                  await ctx.SendAsync(new ChargePayment(ctx.Data.OrderId, ctx.Data.Amount));
              },
              compensate: ctx => ctx.SendAsync(new RefundPayment(ctx.Data.OrderId, ctx.Data.Amount)),
              retry: Herald.Reliability.Retry.RetryPolicy.Create(r => r.NoRetries()))
        .Step("ship", async ctx =>
        {
            ctx.Data.ShipmentId = $"shipment-{ctx.Data.OrderId:N}";
            await ctx.SendAsync(new ShipOrder(ctx.Data.OrderId));
        }, retry: Herald.Reliability.Retry.RetryPolicy.Create(r => r.NoRetries())));

    /// <summary>
    /// Ships an order, but the courier does not answer the first <paramref name="failures"/> runs: the step is retried
    /// <paramref name="delayedRetries"/> times, a minute apart on the clock.
    /// </summary>
    public static SagaDefinition<FulfilmentData> ShippingFailingFirst(string name, int failures, int delayedRetries) =>
        SagaDefinition.Create<FulfilmentData>(name, s => s
            .Step(
                "ship",
                async ctx =>
                {
                    if (Interlocked.Decrement(ref failures) >= 0)
                    {
                        throw new TimeoutException("No courier answered.");
                    }

                    await ctx.SendAsync(new ShipOrder(ctx.Data.OrderId));
                },
                retry: Herald.Reliability.Retry.RetryPolicy.Create(r => r.Immediate(0).Delayed(delayedRetries, TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(1)))));

    /// <summary>How the application wires the sample into Herald; the tests start the harness with the same call.</summary>
    public static void Configure(Herald.Hosting.HeraldBuilder h) => h
        .AddMessageTypesFromAssembly(typeof(OrderSagas).Assembly)
        .AddHandler<PlaceOrderHandler>()
        .AddHandler<ChargeCardHandler>()
        .AddSaga(Machine)
        .AddSaga(Orchestrated)
        .Route<ReserveStock>(Routes.Inventory)
        .Route<ReleaseStock>(Routes.Inventory)
        .Route<ChargePayment>(Routes.Payments)
        .Route<RefundPayment>(Routes.Payments)
        .Route<ShipOrder>(Routes.Shipping);
}
