using Herald.Cqrs;
using Herald.Messages;
using Orders.Domain;

namespace Orders;

// Commands (in process, through the command bus).

/// <summary>A customer places an order; returns the new order id.</summary>
public sealed record PlaceOrder(string CustomerId, IReadOnlyList<OrderLine> Lines) : ICommand<Guid>;

/// <summary>Confirms an order whose stock is reserved.</summary>
public sealed record ConfirmOrder(Guid OrderId) : ICommand;

/// <summary>Cancels an order that has not shipped.</summary>
public sealed record CancelOrder(Guid OrderId, string Reason) : ICommand;

/// <summary>Marks an order shipped.</summary>
public sealed record ShipOrder(Guid OrderId, string TrackingNumber) : ICommand;

/// <summary>Marks an order delivered.</summary>
public sealed record DeliverOrder(Guid OrderId) : ICommand;

/// <summary>The current summary of one order, from the read model.</summary>
public sealed record GetOrderSummary(Guid OrderId) : IQuery<OrderSummary?>;

// Events: stored in the order's stream, then published to the bus from the store.

/// <summary>An order was placed.</summary>
[MessageType("order-placed")]
public sealed record OrderPlaced(Guid OrderId, string CustomerId, IReadOnlyList<OrderLine> Lines, decimal Total);

/// <summary>The order is confirmed: its stock is reserved.</summary>
[MessageType("order-confirmed")]
public sealed record OrderConfirmed(Guid OrderId);

/// <summary>The order was cancelled.</summary>
[MessageType("order-cancelled")]
public sealed record OrderCancelled(Guid OrderId, string Reason);

/// <summary>The order left the warehouse.</summary>
[MessageType("order-shipped")]
public sealed record OrderShipped(Guid OrderId, string TrackingNumber);

/// <summary>The order reached the customer.</summary>
[MessageType("order-delivered")]
public sealed record OrderDelivered(Guid OrderId);

// Messages between the fulfillment flow and the warehouse (over the transport).

/// <summary>Asks the warehouse to reserve stock for an order.</summary>
[MessageType("reserve-stock")]
public sealed record ReserveStock(Guid OrderId, IReadOnlyList<OrderLine> Lines);

/// <summary>The warehouse reserved the stock.</summary>
[MessageType("stock-reserved")]
public sealed record StockReserved(Guid OrderId);

/// <summary>The warehouse cannot supply the order.</summary>
[MessageType("stock-unavailable")]
public sealed record StockUnavailable(Guid OrderId, string Sku);
