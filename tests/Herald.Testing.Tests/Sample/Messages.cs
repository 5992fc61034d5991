using Herald.Messages;

namespace Herald.Testing.Tests.Sample;

// A small order domain, as an application would write it: the tests below use the harness the way its tests would.
[MessageType("place-order")]
public sealed record PlaceOrder(Guid OrderId, string Customer, decimal Amount);

[MessageType("order-placed")]
public sealed record OrderPlaced(Guid OrderId, decimal Amount);

[MessageType("charge-card")]
public sealed record ChargeCard(Guid OrderId, decimal Amount);

[MessageType("reserve-stock")]
public sealed record ReserveStock(Guid OrderId);

[MessageType("release-stock")]
public sealed record ReleaseStock(Guid OrderId);

[MessageType("stock-reserved")]
public sealed record StockReserved(Guid OrderId);

[MessageType("charge-payment")]
public sealed record ChargePayment(Guid OrderId, decimal Amount);

[MessageType("refund-payment")]
public sealed record RefundPayment(Guid OrderId, decimal Amount);

[MessageType("payment-taken")]
public sealed record PaymentTaken(Guid OrderId);

[MessageType("payment-timed-out")]
public sealed record PaymentTimedOut(Guid OrderId);

[MessageType("ship-order")]
public sealed record ShipOrder(Guid OrderId);

[MessageType("order-completed")]
public sealed record OrderCompleted(Guid OrderId);

/// <summary>Messages other services handle: the harness's host only sends them, to their own queues.</summary>
public static class Routes
{
    public const string Inventory = "inventory";
    public const string Payments = "payments";
    public const string Shipping = "shipping";
}
