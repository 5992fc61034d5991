using Herald.Hosting;
using Herald.Streams;
using Orders.ReadModel;

namespace Orders.Stats;

/// <summary>
/// The stream "orders per status per minute": every order event of <c>$all</c> (placed, stock reserved, paid, confirmed,
/// cancelled) counted per status in 1-minute tumbling windows of the event's time, its state kept with the profile's
/// stream state store (SQLite or PostgreSQL) and committed with its checkpoint. <c>GET /stats/orders-per-status</c>
/// answers from it (an interactive query).
/// </summary>
/// <remarks>
/// Herald runs it as a hosted stream in one partition, whose lease one instance holds at a time (two processors of one
/// name on one database would otherwise write each other's state and checkpoint). The others own no partition, answer
/// 503, and one of them takes the partition over when its owner goes.
/// </remarks>
public static class OrderStatusStream
{
    public const string Name = "orders-per-status";
    public const string Store = "orders-per-status-per-minute";

    /// <summary>The statuses it counts, as the read model names them, in the order of an order's life.</summary>
    public static readonly IReadOnlyList<string> Statuses = [OrderStates.Placed, OrderStates.StockReserved, OrderStates.Paid, OrderStates.Confirmed, OrderStates.Cancelled];

    public static readonly TimeSpan WindowSize = TimeSpan.FromMinutes(1);

    // $all is in commit order; the events' times are taken before their commits, so concurrent handlers may commit them a
    // little out of time order. A minute closes 30 s + 30 s after its end, and stays queryable for a day.
    private static readonly StreamProcessorOptions Options = new() { AllowedOutOfOrderness = TimeSpan.FromSeconds(30) };

    /// <summary>Registers the stream: status from the event type, each stream mapping its events to the status they move an order to, keyed by it.</summary>
    public static HeraldBuilder AddOrderStatusStream(this HeraldBuilder herald) =>
        herald.AddStream(
            Name,
            builder => builder.Stream<OrderPlaced>().Map(_ => OrderStates.Placed)
                .Merge(builder.Stream<StockReserved>().Map(_ => OrderStates.StockReserved))
                .Merge(builder.Stream<PaymentCharged>().Map(_ => OrderStates.Paid))
                .Merge(builder.Stream<OrderConfirmed>().Map(_ => OrderStates.Confirmed))
                .Merge(builder.Stream<OrderCancelled>().Map(_ => OrderStates.Cancelled))
                .GroupBy(status => status)
                .WindowedBy(TumblingWindows.Of(WindowSize).WithGrace(TimeSpan.FromSeconds(30)))
                .RetainClosedWindowsFor(TimeSpan.FromDays(1))
                .Count(Store),
            Options);
}
