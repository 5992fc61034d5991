using Herald.EventSourcing.Aggregates;

namespace Orders.Domain;

/// <summary>
/// The order aggregate. Placed by a customer, then moved on by the fulfilment saga: stock reserved, payment charged,
/// confirmed with a shipment; or, when a step fails, its completed steps are undone (payment refunded, stock released)
/// and the order is cancelled. Every rule is checked before an event is raised, so a stored stream is always valid.
/// </summary>
public sealed class Order : Aggregate
{
    private readonly List<OrderLine> _lines = [];

    public string CustomerId { get; private set; } = string.Empty;

    public OrderStatus Status { get; private set; } = OrderStatus.New;

    public IReadOnlyList<OrderLine> Lines => _lines;

    public decimal Total => _lines.Sum(l => l.Quantity * l.UnitPrice);

    public bool StockHeld { get; private set; }

    public string? PaymentId { get; private set; }

    public bool Refunded { get; private set; }

    public void Place(string customerId, IReadOnlyList<OrderLine> lines)
    {
        Require(Status == OrderStatus.New, "an order is placed only once");
        Require(!string.IsNullOrWhiteSpace(customerId), "an order needs a customer");
        Require(lines.Count > 0, "an order needs at least one line");
        Require(lines.All(l => l.Quantity > 0 && l.UnitPrice >= 0), "every line needs a positive quantity and a price of zero or more");
        Raise(new OrderPlaced(Guid.Parse(Id), customerId, [.. lines], lines.Sum(l => l.Quantity * l.UnitPrice)));
    }

    public void RecordStockReserved(string reservationId)
    {
        Require(Status == OrderStatus.Placed, $"stock is reserved only for a placed order (it is {Status})");
        if (!StockHeld)
        {
            Raise(new StockReserved(Guid.Parse(Id), reservationId));
        }
    }

    public void RecordPaymentCharged(string paymentId, decimal amount)
    {
        Require(Status == OrderStatus.Placed, $"payment is taken only for a placed order (it is {Status})");
        Require(StockHeld, "payment is taken only once the stock is reserved");
        if (PaymentId is null)
        {
            Raise(new PaymentCharged(Guid.Parse(Id), paymentId, amount));
        }
    }

    public void Confirm(string trackingNumber)
    {
        Require(Status == OrderStatus.Placed, $"only a placed order can be confirmed (it is {Status})");
        Require(PaymentId is not null, "an order is confirmed only once it is paid");
        Raise(new OrderConfirmed(Guid.Parse(Id), trackingNumber));
    }

    /// <summary>Compensation: the payment was given back. Nothing happens when there was none or it was refunded already.</summary>
    public void RecordPaymentRefunded()
    {
        if (PaymentId is not null && !Refunded)
        {
            Raise(new PaymentRefunded(Guid.Parse(Id), PaymentId));
        }
    }

    /// <summary>Compensation: the reserved stock went back on the shelf. Nothing happens when none is held.</summary>
    public void RecordStockReleased()
    {
        if (StockHeld)
        {
            Raise(new StockReleased(Guid.Parse(Id)));
        }
    }

    /// <summary>Cancels an order that is not confirmed; cancelling a cancelled order changes nothing.</summary>
    public void Cancel(string reason, bool byCompensation)
    {
        if (Status == OrderStatus.Cancelled)
        {
            return;
        }

        Require(Status == OrderStatus.Placed, $"only a placed order can be cancelled (it is {Status})");
        Raise(new OrderCancelled(Guid.Parse(Id), reason, byCompensation));
    }

    protected override void When(object @event)
    {
        switch (@event)
        {
            case OrderPlaced placed:
                CustomerId = placed.CustomerId;
                _lines.AddRange(placed.Lines);
                Status = OrderStatus.Placed;
                break;
            case StockReserved:
                StockHeld = true;
                break;
            case PaymentCharged charged:
                PaymentId = charged.PaymentId;
                break;
            case OrderConfirmed:
                Status = OrderStatus.Confirmed;
                break;
            case PaymentRefunded:
                Refunded = true;
                break;
            case StockReleased:
                StockHeld = false;
                break;
            case OrderCancelled:
                Status = OrderStatus.Cancelled;
                break;
        }
    }

    private static void Require(bool rule, string description)
    {
        if (!rule)
        {
            throw new OrderRuleException(description);
        }
    }
}

/// <summary>Where an order is in its life.</summary>
public enum OrderStatus
{
    New,
    Placed,
    Confirmed,
    Cancelled,
}

/// <summary>One line of an order, priced from the catalog when it was placed.</summary>
public sealed record OrderLine(string Sku, int Quantity, decimal UnitPrice);

/// <summary>Thrown when a command would break a rule of the order; nothing is stored (HTTP 422).</summary>
public sealed class OrderRuleException(string rule) : InvalidOperationException($"Order rule broken: {rule}.");
