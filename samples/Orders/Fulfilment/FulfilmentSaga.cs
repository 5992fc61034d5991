using System.Diagnostics;
using Herald.EventSourcing.Aggregates;
using Herald.Messages;
using Herald.Persistence;
using Herald.Reliability.Retry;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Orders.Domain;

namespace Orders.Fulfilment;

/// <summary>The fulfilment saga's data, saved with its instance after every step.</summary>
public sealed class FulfilmentData
{
    public Guid OrderId { get; set; }

    public string CustomerId { get; set; } = string.Empty;

    public List<OrderLine> Lines { get; set; } = [];

    public decimal Total { get; set; }

    /// <summary>The correlation id of the request that placed the order: every step's events carry it.</summary>
    public string? CorrelationId { get; set; }
}

/// <summary>
/// The fulfilment saga, orchestrated: reserve stock, charge the payment, ship. Each step writes its service's row and the
/// order's event in one unit of work with the saga's progress. When a step fails (a declined payment is never retried),
/// the completed steps are compensated in reverse order: refund, then release the stock and cancel the order.
/// </summary>
public static class FulfilmentSaga
{
    public const string Name = "order-fulfilment";

    private static readonly RetryPolicy StepRetry = RetryPolicy.Create(r => r
        .Immediate(3)
        .Delayed(3, TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(2))
        .NeverRetry<PaymentDeclinedException>()
        .NeverRetry<OrderRuleException>());

    public static SagaDefinition<FulfilmentData> Definition { get; } = SagaDefinition.Create<FulfilmentData>(Name, s => s
        .Step("reserve-stock", ReserveStockAsync, compensate: ReleaseStockAndCancelAsync, retry: StepRetry)
        .Step("charge-payment", ChargePaymentAsync, compensate: RefundPaymentAsync, retry: StepRetry)
        .Step("ship", ShipAsync, compensate: CancelShipmentAsync, retry: StepRetry));

    private static async ValueTask ReserveStockAsync(SagaStepContext<FulfilmentData> step)
    {
        using var activity = OrdersTelemetry.StartStep(step);
        var data = step.Data;
        await step.Services.GetRequiredService<Inventory>().ReserveAsync(UnitOfWork(step), data.OrderId, data.Lines, data.CorrelationId, step.CancellationToken);
        await ChangeOrderAsync(step, order => order.RecordStockReserved("res-" + data.OrderId.ToString("N")[^12..]));
    }

    private static async ValueTask ReleaseStockAndCancelAsync(SagaStepContext<FulfilmentData> step)
    {
        using var activity = OrdersTelemetry.StartStep(step);
        await step.Services.GetRequiredService<Inventory>().ReleaseAsync(UnitOfWork(step), step.Data.OrderId, step.CancellationToken);
        // The saga keeps the error that made it compensate; it becomes the cancellation's reason.
        var instance = await step.Services.GetRequiredService<ISagaStore>().LoadAsync(step.SagaName, step.SagaId, step.CancellationToken);
        var reason = instance?.Error ?? "fulfilment failed";
        await ChangeOrderAsync(step, order =>
        {
            order.RecordStockReleased();
            order.Cancel(reason, byCompensation: true);
        });
    }

    private static async ValueTask ChargePaymentAsync(SagaStepContext<FulfilmentData> step)
    {
        using var activity = OrdersTelemetry.StartStep(step);
        var data = step.Data;
        await step.Services.GetRequiredService<Payments>().ChargeAsync(UnitOfWork(step), data.OrderId, data.CustomerId, data.Total, data.CorrelationId, step.CancellationToken);
        await ChangeOrderAsync(step, order => order.RecordPaymentCharged(Payments.PaymentIdFor(data.OrderId), data.Total));
    }

    private static async ValueTask RefundPaymentAsync(SagaStepContext<FulfilmentData> step)
    {
        using var activity = OrdersTelemetry.StartStep(step);
        await step.Services.GetRequiredService<Payments>().RefundAsync(UnitOfWork(step), step.Data.OrderId, step.CancellationToken);
        await ChangeOrderAsync(step, order => order.RecordPaymentRefunded());
    }

    private static async ValueTask ShipAsync(SagaStepContext<FulfilmentData> step)
    {
        using var activity = OrdersTelemetry.StartStep(step);
        var data = step.Data;
        await step.Services.GetRequiredService<Shipping>().ArrangeAsync(UnitOfWork(step), data.OrderId, data.CorrelationId, step.CancellationToken);
        await ChangeOrderAsync(step, order => order.Confirm(Shipping.TrackingNumberFor(data.OrderId)));
    }

    private static async ValueTask CancelShipmentAsync(SagaStepContext<FulfilmentData> step)
    {
        using var activity = OrdersTelemetry.StartStep(step);
        await step.Services.GetRequiredService<Shipping>().CancelAsync(UnitOfWork(step), step.Data.OrderId, step.CancellationToken);
    }

    private static IUnitOfWork UnitOfWork(SagaStepContext<FulfilmentData> step) => step.Services.GetRequiredService<IUnitOfWork>();

    // The order's events from a step carry the request's correlation id, the step's idempotency key as causation id and
    // the step's trace context, so the history and the trace show the whole flow.
    private static async ValueTask ChangeOrderAsync(SagaStepContext<FulfilmentData> step, Action<Order> change)
    {
        var orders = step.Services.GetRequiredService<AggregateRepository<Order>>();
        var order = await orders.LoadAsync(step.Data.OrderId.ToString(), step.CancellationToken);
        change(order);
        var headers = Activity.Current is { IdFormat: ActivityIdFormat.W3C, Id: { } traceParent }
            ? new Dictionary<string, string> { [HeaderNames.TraceParent] = traceParent }
            : null;
        await orders.SaveAsync(order, new EventMetadata { CorrelationId = step.Data.CorrelationId, CausationId = step.IdempotencyKey, Headers = headers }, step.CancellationToken);
    }
}
