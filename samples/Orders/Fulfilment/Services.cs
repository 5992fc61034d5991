using Herald.Persistence;
using Orders.Domain;

namespace Orders.Fulfilment;

/// <summary>The sample's inventory: reserves an order's units once per order, releases them on compensation.</summary>
public sealed class Inventory(Ledger ledger)
{
    public ValueTask ReserveAsync(IUnitOfWork unitOfWork, Guid orderId, IReadOnlyList<OrderLine> lines, string? correlationId, CancellationToken cancellationToken) =>
        ledger.ExecuteAsync(
            unitOfWork,
            "INSERT INTO {prefix}inventory_reservations AS t (order_id, units, status, correlation_id, instance) VALUES (@order, @units, 'reserved', @correlation, @instance) " +
            "ON CONFLICT (order_id) DO UPDATE SET repeats = t.repeats + 1",
            new Dictionary<string, object?> { ["order"] = orderId.ToString(), ["units"] = (long)lines.Sum(l => l.Quantity), ["correlation"] = correlationId, ["instance"] = ledger.Instance },
            cancellationToken);

    public ValueTask ReleaseAsync(IUnitOfWork unitOfWork, Guid orderId, CancellationToken cancellationToken) =>
        ledger.ExecuteAsync(
            unitOfWork,
            "UPDATE {prefix}inventory_reservations SET status = 'released' WHERE order_id = @order AND status = 'reserved'",
            new Dictionary<string, object?> { ["order"] = orderId.ToString() },
            cancellationToken);
}

/// <summary>
/// The sample's payment service. Declines (deterministically) the customer <see cref="Catalog.BadCardCustomer"/> and any
/// total above <see cref="Catalog.PaymentLimit"/>; charges once per order whatever the number of runs.
/// </summary>
public sealed class Payments(Ledger ledger)
{
    public static string PaymentIdFor(Guid orderId) => "pay-" + orderId.ToString("N")[^12..];

    public ValueTask ChargeAsync(IUnitOfWork unitOfWork, Guid orderId, string customerId, decimal amount, string? correlationId, CancellationToken cancellationToken)
    {
        if (customerId == Catalog.BadCardCustomer)
        {
            throw new PaymentDeclinedException($"the card of customer '{customerId}' was declined");
        }

        if (amount > Catalog.PaymentLimit)
        {
            throw new PaymentDeclinedException($"{amount:0.00} is above the payment limit of {Catalog.PaymentLimit:0.00}");
        }

        return ledger.ExecuteAsync(
            unitOfWork,
            "INSERT INTO {prefix}payments AS t (order_id, payment_id, amount_cents, status, correlation_id, instance) VALUES (@order, @payment, @cents, 'charged', @correlation, @instance) " +
            "ON CONFLICT (order_id) DO UPDATE SET repeats = t.repeats + 1",
            new Dictionary<string, object?>
            {
                ["order"] = orderId.ToString(),
                ["payment"] = PaymentIdFor(orderId),
                ["cents"] = (long)decimal.Round(amount * 100),
                ["correlation"] = correlationId,
                ["instance"] = ledger.Instance,
            },
            cancellationToken);
    }

    public ValueTask RefundAsync(IUnitOfWork unitOfWork, Guid orderId, CancellationToken cancellationToken) =>
        ledger.ExecuteAsync(
            unitOfWork,
            "UPDATE {prefix}payments SET status = 'refunded' WHERE order_id = @order AND status = 'charged'",
            new Dictionary<string, object?> { ["order"] = orderId.ToString() },
            cancellationToken);
}

/// <summary>The sample's shipping: arranges one shipment per order.</summary>
public sealed class Shipping(Ledger ledger)
{
    public static string TrackingNumberFor(Guid orderId) => "TRK-" + orderId.ToString("N")[^8..].ToUpperInvariant();

    public ValueTask ArrangeAsync(IUnitOfWork unitOfWork, Guid orderId, string? correlationId, CancellationToken cancellationToken) =>
        ledger.ExecuteAsync(
            unitOfWork,
            "INSERT INTO {prefix}shipments AS t (order_id, tracking_number, status, correlation_id, instance) VALUES (@order, @tracking, 'arranged', @correlation, @instance) " +
            "ON CONFLICT (order_id) DO UPDATE SET repeats = t.repeats + 1",
            new Dictionary<string, object?> { ["order"] = orderId.ToString(), ["tracking"] = TrackingNumberFor(orderId), ["correlation"] = correlationId, ["instance"] = ledger.Instance },
            cancellationToken);

    public ValueTask CancelAsync(IUnitOfWork unitOfWork, Guid orderId, CancellationToken cancellationToken) =>
        ledger.ExecuteAsync(
            unitOfWork,
            "UPDATE {prefix}shipments SET status = 'cancelled' WHERE order_id = @order AND status = 'arranged'",
            new Dictionary<string, object?> { ["order"] = orderId.ToString() },
            cancellationToken);
}

/// <summary>The payment service declined the charge: never retried, the saga compensates.</summary>
public sealed class PaymentDeclinedException(string reason) : InvalidOperationException($"Payment declined: {reason}.");
