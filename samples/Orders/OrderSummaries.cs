using System.Collections.Concurrent;

namespace Orders;

/// <summary>The read model of the sample: one summary per order, updated by the projection from the order events.</summary>
public sealed class OrderSummaries
{
    private readonly ConcurrentDictionary<Guid, OrderSummary> _orders = new();

    public IReadOnlyCollection<OrderSummary> All => [.. _orders.Values];

    public OrderSummary? Get(Guid id) => _orders.GetValueOrDefault(id);

    public void Upsert(Guid id, Func<OrderSummary?, OrderSummary> change) =>
        _orders.AddOrUpdate(id, _ => change(null), (_, existing) => change(existing));
}

/// <summary>What the read model knows about one order.</summary>
public sealed record OrderSummary(Guid OrderId, string CustomerId, decimal Total, string Status, string? Detail = null);
