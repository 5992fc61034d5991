using Herald.Cqrs;
using Herald.Messages;

namespace Orders;

/// <summary>Command: a customer places an order. Returns the new order id.</summary>
public sealed record PlaceOrder(string CustomerId, string Sku, int Quantity, decimal UnitPrice) : ICommand<Guid>;

/// <summary>Query: the current summary of one order.</summary>
public sealed record GetOrderSummary(Guid OrderId) : IQuery<OrderSummary?>;

/// <summary>Event: an order was placed.</summary>
[MessageType("order-placed")]
public sealed record OrderPlaced(Guid OrderId, string CustomerId, string Sku, int Quantity, decimal Total);

/// <summary>Message sent to the warehouse: reserve stock for an order.</summary>
[MessageType("reserve-stock")]
public sealed record ReserveStock(Guid OrderId, string Sku, int Quantity);

/// <summary>Event: the warehouse reserved the stock.</summary>
[MessageType("stock-reserved")]
public sealed record StockReserved(Guid OrderId);

/// <summary>Event: the order is confirmed and will ship.</summary>
[MessageType("order-confirmed")]
public sealed record OrderConfirmed(Guid OrderId);
