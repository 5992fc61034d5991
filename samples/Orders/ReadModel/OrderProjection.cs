using Herald.Projections;
using Orders.Domain;

namespace Orders.ReadModel;

/// <summary>
/// The read model the HTTP API serves: one document per order in the table <c>orders</c>, with the customer's and the
/// products' names looked up in the tables <c>customers</c> and <c>products</c>, which this projection keeps from the
/// catalog's events (they come first in the log, so a lookup always finds them).
/// </summary>
public sealed class OrderProjection : Projection
{
    public const string ProjectionName = "order-read-model";

    public static readonly ReadModelTable<OrderView> Orders = new("orders");
    public static readonly ReadModelTable<CustomerView> Customers = new("customers");
    public static readonly ReadModelTable<ProductView> Products = new("products");

    public OrderProjection()
        : base(ProjectionName)
    {
        Table(Orders);
        Table(Customers);
        Table(Products);
        On<CustomerRegistered>((e, context, _) => context.UpsertAsync(Customers, e.CustomerId, new CustomerView(e.CustomerId, e.Name)));
        On<ProductListed>((e, context, _) => context.UpsertAsync(Products, e.Sku, new ProductView(e.Sku, e.Name, e.Price)));
        On<OrderPlaced>(async (e, context, token) =>
        {
            var customer = await context.LookupAsync(Customers, e.CustomerId, token);
            var lines = new List<OrderLineView>(e.Lines.Count);
            foreach (var line in e.Lines)
            {
                var product = await context.LookupAsync(Products, line.Sku, token);
                lines.Add(new OrderLineView(line.Sku, product?.Name ?? "(unknown)", line.Quantity, line.UnitPrice));
            }

            var at = context.Envelope.Time;
            await context.UpsertAsync(Orders, e.OrderId.ToString(), new OrderView
            {
                Id = e.OrderId.ToString(),
                Status = OrderStates.Placed,
                CustomerId = e.CustomerId,
                CustomerName = customer?.Name ?? "(unknown)",
                Lines = lines,
                Total = e.Total,
                PlacedAt = at,
                UpdatedAt = at,
                CorrelationId = context.Envelope.CorrelationId,
            });
        });
        On<StockReserved>((e, context, _) => Update(context, e.OrderId, o => o with { Status = OrderStates.StockReserved }));
        On<PaymentCharged>((e, context, _) => Update(context, e.OrderId, o => o with { Status = OrderStates.Paid, PaymentId = e.PaymentId }));
        On<OrderConfirmed>((e, context, _) => Update(context, e.OrderId, o => o with { Status = OrderStates.Confirmed, TrackingNumber = e.TrackingNumber }));
        On<PaymentRefunded>((e, context, _) => Update(context, e.OrderId, o => o with { Refunded = true }));
        On<StockReleased>((e, context, _) => Update(context, e.OrderId, o => o with { StockReleased = true }));
        On<OrderCancelled>((e, context, _) => Update(context, e.OrderId, o => o with
        {
            Status = OrderStates.Cancelled,
            CancelReason = e.Reason,
            CancelledByCompensation = e.ByCompensation,
        }));
    }

    private static ValueTask Update(ProjectionContext context, Guid orderId, Func<OrderView, OrderView> change) =>
        context.UpdateExistingAsync(Orders, orderId.ToString(), o => change(o) with { UpdatedAt = context.Envelope.Time });
}

/// <summary>The statuses the read model shows; Confirmed and Cancelled are final.</summary>
public static class OrderStates
{
    public const string Placed = "Placed";
    public const string StockReserved = "StockReserved";
    public const string Paid = "Paid";
    public const string Confirmed = "Confirmed";
    public const string Cancelled = "Cancelled";

    public static bool IsFinal(string? status) => status is Confirmed or Cancelled;
}

/// <summary>One order as the API shows it.</summary>
public sealed record OrderView
{
    public required string Id { get; init; }

    public required string Status { get; init; }

    public required string CustomerId { get; init; }

    public required string CustomerName { get; init; }

    public required IReadOnlyList<OrderLineView> Lines { get; init; }

    public decimal Total { get; init; }

    public DateTimeOffset PlacedAt { get; init; }

    public DateTimeOffset UpdatedAt { get; init; }

    public string? PaymentId { get; init; }

    public string? TrackingNumber { get; init; }

    public bool Refunded { get; init; }

    public bool StockReleased { get; init; }

    public string? CancelReason { get; init; }

    public bool CancelledByCompensation { get; init; }

    public string? CorrelationId { get; init; }
}

/// <summary>One line of an order, with the product's name.</summary>
public sealed record OrderLineView(string Sku, string Name, int Quantity, decimal UnitPrice);

/// <summary>A customer in the lookup table.</summary>
public sealed record CustomerView(string Id, string Name);

/// <summary>A product in the lookup table.</summary>
public sealed record ProductView(string Sku, string Name, decimal Price);
