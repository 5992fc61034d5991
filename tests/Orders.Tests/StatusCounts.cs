using Herald.EventSourcing;
using Orders.Api;
using Orders.ReadModel;

namespace Orders.Tests;

/// <summary>The sample stream's answer computed from the event store, to compare with what it serves.</summary>
public static class StatusCounts
{
    /// <summary>
    /// The order events of the whole log per status (from their type) and 1-minute window of their time, in window then
    /// status order: what <c>GET /stats/orders-per-status</c> serves once its stream has caught up.
    /// </summary>
    public static async Task<List<StatusCount>> FromLogAsync(IEventStore events)
    {
        var statuses = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["order-placed"] = OrderStates.Placed,
            ["stock-reserved"] = OrderStates.StockReserved,
            ["payment-charged"] = OrderStates.Paid,
            ["order-confirmed"] = OrderStates.Confirmed,
            ["order-cancelled"] = OrderStates.Cancelled,
        };
        var counts = new Dictionary<(DateTimeOffset Start, string Status), long>();
        await foreach (var recorded in events.ReadAllAsync())
        {
            if (statuses.TryGetValue(recorded.EventType, out var status))
            {
                var ticks = recorded.Envelope.Time.UtcTicks;
                var start = new DateTimeOffset(ticks - (ticks % TimeSpan.TicksPerMinute), TimeSpan.Zero);
                counts[(start, status)] = counts.GetValueOrDefault((start, status)) + 1;
            }
        }

        var order = statuses.Values.ToList();
        return [.. counts.OrderBy(c => c.Key.Start).ThenBy(c => order.IndexOf(c.Key.Status))
            .Select(c => new StatusCount(c.Key.Status, c.Key.Start, c.Key.Start.AddMinutes(1), c.Value))];
    }

    /// <summary>The total of one status over every window.</summary>
    public static long Total(this IEnumerable<StatusCount> counts, string status) => counts.Where(c => c.Status == status).Sum(c => c.Count);
}
