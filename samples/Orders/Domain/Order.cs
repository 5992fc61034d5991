using Herald.EventSourcing.Aggregates;

namespace Orders.Domain;

/// <summary>
/// The order aggregate: placed, then confirmed (stock reserved), shipped and delivered, or cancelled before it ships.
/// Every change is an event; the rules below are checked before an event is raised, so a stored stream is always valid.
/// </summary>
public sealed class Order : Aggregate
{
    private readonly List<OrderLine> _lines = [];

    public string CustomerId { get; private set; } = string.Empty;

    public OrderStatus Status { get; private set; } = OrderStatus.New;

    public IReadOnlyList<OrderLine> Lines => _lines;

    public decimal Total => _lines.Sum(l => l.Quantity * l.UnitPrice);

    public void Place(string customerId, IReadOnlyList<OrderLine> lines)
    {
        Require(Status == OrderStatus.New, "an order is placed only once");
        Require(!string.IsNullOrWhiteSpace(customerId), "an order needs a customer");
        Require(lines.Count > 0, "an order needs at least one line");
        Require(lines.All(l => l.Quantity > 0 && l.UnitPrice >= 0), "every line needs a positive quantity and a price of zero or more");
        Raise(new OrderPlaced(Guid.Parse(Id), customerId, [.. lines], lines.Sum(l => l.Quantity * l.UnitPrice)));
    }

    public void Confirm()
    {
        Require(Status == OrderStatus.Placed, $"only a placed order can be confirmed (it is {Status})");
        Raise(new OrderConfirmed(Guid.Parse(Id)));
    }

    public void Cancel(string reason)
    {
        Require(Status is OrderStatus.Placed or OrderStatus.Confirmed, $"only an order that has not shipped can be cancelled (it is {Status})");
        Raise(new OrderCancelled(Guid.Parse(Id), reason));
    }

    public void Ship(string trackingNumber)
    {
        Require(Status == OrderStatus.Confirmed, $"only a confirmed order can ship (it is {Status})");
        Raise(new OrderShipped(Guid.Parse(Id), trackingNumber));
    }

    public void Deliver()
    {
        Require(Status == OrderStatus.Shipped, $"only a shipped order can be delivered (it is {Status})");
        Raise(new OrderDelivered(Guid.Parse(Id)));
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
            case OrderConfirmed:
                Status = OrderStatus.Confirmed;
                break;
            case OrderCancelled:
                Status = OrderStatus.Cancelled;
                break;
            case OrderShipped:
                Status = OrderStatus.Shipped;
                break;
            case OrderDelivered:
                Status = OrderStatus.Delivered;
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
    Shipped,
    Delivered,
}

/// <summary>One line of an order.</summary>
public sealed record OrderLine(string Sku, int Quantity, decimal UnitPrice);

/// <summary>Thrown when a command would break a rule of the order; nothing is stored.</summary>
public sealed class OrderRuleException(string rule) : InvalidOperationException($"Order rule broken: {rule}.");
