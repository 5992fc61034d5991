using System.Globalization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Herald.Streams;
using Orders.Stats;

namespace Orders.Api;

/// <summary>Statistics from the stream processor's state (interactive queries), not from the read model.</summary>
public static class StatsEndpoints
{
    public static IEndpointRouteBuilder MapStatsEndpoints(this IEndpointRouteBuilder app)
    {
        app.MapGetAndHead("/stats/orders-per-status", OrdersPerStatusAsync);
        return app;
    }

    /// <summary>
    /// <c>GET /stats/orders-per-status?from=&amp;to=</c>: the count per status of each 1-minute window that starts in
    /// [from, to) (ISO 8601 times; both optional), in window then status order.
    /// </summary>
    private static async Task<IResult> OrdersPerStatusAsync(string? from, string? to, StreamProcessors streams, CancellationToken cancellationToken)
    {
        var errors = new Dictionary<string, string[]>(StringComparer.Ordinal);
        var start = Time(from, nameof(from), DateTimeOffset.MinValue, errors);
        var end = Time(to, nameof(to), DateTimeOffset.MaxValue, errors);
        if (errors.Count == 0 && start >= end)
        {
            errors[nameof(to)] = [$"must be after from ({start:O}), not {end:O}"];
        }

        if (errors.Count > 0)
        {
            return Results.ValidationProblem(errors, title: "The query is not valid");
        }

        var processor = streams[OrderStatusStream.Name];
        if (processor.OwnedPartitions.Count == 0)
        {
            return Results.Problem(
                statusCode: StatusCodes.Status503ServiceUnavailable,
                title: "Statistics are served by another instance",
                detail: $"One instance at a time runs the stream '{OrderStatusStream.Name}', and it is not this one (or it is starting); ask again.");
        }

        var counts = new List<StatusCount>();
        foreach (var status in OrderStatusStream.Statuses)
        {
            var windows = await processor.QueryWindowsAsync<string, long>(OrderStatusStream.Store, status, start, end, cancellationToken);
            counts.AddRange(windows.Select(w => new StatusCount(status, w.Key.Window.Start, w.Key.Window.End, w.Value)));
        }

        // A stable sort: within a window, the statuses stay in the order of an order's life.
        return Results.Ok(counts.OrderBy(c => c.WindowStart).ToList());
    }

    private static DateTimeOffset Time(string? text, string name, DateTimeOffset absent, Dictionary<string, string[]> errors)
    {
        if (string.IsNullOrEmpty(text))
        {
            return absent;
        }

        if (DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var time))
        {
            return time;
        }

        errors[name] = [$"must be an ISO 8601 time such as 2026-01-31T12:00:00Z, not '{text}'"];
        return absent;
    }
}

/// <summary>How many order events moved orders to <c>Status</c> in the window [WindowStart, WindowEnd).</summary>
public sealed record StatusCount(string Status, DateTimeOffset WindowStart, DateTimeOffset WindowEnd, long Count);
