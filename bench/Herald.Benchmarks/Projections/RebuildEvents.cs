using Herald.Messages;

namespace Herald.Benchmarks.Projections;

// The events both contenders replay: each order stream holds one of each, in this order.
[MessageType("bench-rebuild-order-placed")]
public sealed record RebuildOrderPlaced(Guid OrderId, string Customer, decimal Total, int Lines);

[MessageType("bench-rebuild-order-paid")]
public sealed record RebuildOrderPaid(Guid OrderId, string PaymentReference);

[MessageType("bench-rebuild-order-shipped")]
public sealed record RebuildOrderShipped(Guid OrderId, string TrackingNumber);

/// <summary>The events of order <paramref name="index"/> of a run, the same on both sides.</summary>
internal static class RebuildWorkload
{
    public const int EventsPerOrder = 3;

    public const string Shipped = "Shipped";

    public static object[] EventsOf(Guid orderId, int index) =>
    [
        new RebuildOrderPlaced(orderId, "customer-" + (index % 997), 10m + (index % 500), 1 + (index % 7)),
        new RebuildOrderPaid(orderId, "payment-" + index),
        new RebuildOrderShipped(orderId, "tracking-" + index),
    ];
}
