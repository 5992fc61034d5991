using Herald.Cqrs;
using Herald.Messages;
using Orders.Domain;

namespace Orders;

// Commands (in process, through the command bus, each in one unit of work).

/// <summary>A customer places an order; the id comes from the caller (the HTTP endpoint) so a retry names the same order.</summary>
public sealed record PlaceOrder(Guid OrderId, string? CustomerId, IReadOnlyList<OrderItem>? Items) : ICommand<OrderAccepted>;

/// <summary>One requested line: which product and how many.</summary>
public sealed record OrderItem(string? Sku, int? Quantity);

/// <summary>What <see cref="PlaceOrder"/> answers: the order as accepted.</summary>
public sealed record OrderAccepted(Guid OrderId, string CustomerId, decimal Total);

/// <summary>The customer cancels an order that is not confirmed yet.</summary>
public sealed record CancelOrder(Guid OrderId, string Reason) : ICommand;

// Events: stored in the order's stream ("order-{id}"), published to the bus from the store, projected into the read model.

/// <summary>An order was placed.</summary>
[MessageType("order-placed")]
public sealed record OrderPlaced(Guid OrderId, string CustomerId, IReadOnlyList<OrderLine> Lines, decimal Total);

/// <summary>The inventory reserved the order's stock (saga step 1).</summary>
[MessageType("stock-reserved")]
public sealed record StockReserved(Guid OrderId, string ReservationId);

/// <summary>The payment service charged the order (saga step 2).</summary>
[MessageType("payment-charged")]
public sealed record PaymentCharged(Guid OrderId, string PaymentId, decimal Amount);

/// <summary>The shipment is arranged and the order confirmed (saga step 3): its final state on the happy path.</summary>
[MessageType("order-confirmed")]
public sealed record OrderConfirmed(Guid OrderId, string TrackingNumber);

/// <summary>Compensation of step 2: the payment was refunded.</summary>
[MessageType("payment-refunded")]
public sealed record PaymentRefunded(Guid OrderId, string PaymentId);

/// <summary>Compensation of step 1: the stock was released.</summary>
[MessageType("stock-released")]
public sealed record StockReleased(Guid OrderId);

/// <summary>The order was cancelled: by its customer, or by the saga's compensation when a step failed.</summary>
[MessageType("order-cancelled")]
public sealed record OrderCancelled(Guid OrderId, string Reason, bool ByCompensation);

// The catalog, seeded as events so the read model's lookup tables come from the log.

/// <summary>A customer joined the shop.</summary>
[MessageType("customer-registered")]
public sealed record CustomerRegistered(string CustomerId, string Name);

/// <summary>A product was listed.</summary>
[MessageType("product-listed")]
public sealed record ProductListed(string Sku, string Name, decimal Price);
