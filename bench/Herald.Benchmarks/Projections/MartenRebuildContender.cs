using Herald.Benchmarks.EventStore;
using Herald.Benchmarks.Harness;
using JasperFx;
using JasperFx.Events;
using JasperFx.Events.Projections;
using Marten;
using Marten.Events.Aggregation;

namespace Herald.Benchmarks.Projections;

/// <summary>What Marten's projection keeps per order (a document in its own table).</summary>
public sealed class MartenOrderSummary
{
    public Guid Id { get; set; }

    public string Customer { get; set; } = "";

    public decimal Total { get; set; }

    public int Lines { get; set; }

    public string Status { get; set; } = "";

    public string? PaymentReference { get; set; }

    public string? TrackingNumber { get; set; }
}

/// <summary>The same read model as Herald's, as Marten's docs write a single-stream projection.</summary>
public sealed class MartenOrderSummaryProjection : SingleStreamProjection<MartenOrderSummary, Guid>
{
    public static MartenOrderSummary Create(RebuildOrderPlaced e) =>
        new() { Id = e.OrderId, Customer = e.Customer, Total = e.Total, Lines = e.Lines, Status = "Placed" };

    public static void Apply(RebuildOrderPaid e, MartenOrderSummary view)
    {
        view.Status = "Paid";
        view.PaymentReference = e.PaymentReference;
    }

    public static void Apply(RebuildOrderShipped e, MartenOrderSummary view)
    {
        view.Status = RebuildWorkload.Shipped;
        view.TrackingNumber = e.TrackingNumber;
    }
}

/// <summary>
/// Marten on its own fresh schema of the same PostgreSQL: the events appended one stream per order, the projection
/// registered as async, and the rebuild run by the async daemon (<c>RebuildProjectionAsync</c>), as Marten's docs show.
/// </summary>
internal sealed class MartenRebuildContender(string connectionString) : IRebuildContender
{
    private const int OrdersPerSession = 200;

    private readonly string _schema = $"marten_bench_{Guid.NewGuid():N}"[..24];
    private DocumentStore? _store;

    public string Name => "Marten";

    public string Setup =>
        $"Marten {PackageVersion.Of(typeof(DocumentStore))} `DocumentStore` on a fresh schema, Guid stream ids, defaults otherwise; `SingleStreamProjection<OrderSummary, Guid>` with `Create` and two `Apply` methods, " +
        "registered with `Projections.Add<T>(ProjectionLifecycle.Async)`. Rebuild: `(await store.BuildProjectionDaemonAsync()).RebuildProjectionAsync<T>(token)` (it empties the projection's table and replays every event); timed until it returns.";

    private DocumentStore Store => _store ?? throw new InvalidOperationException("Not started.");

    public async Task StartAsync(IReadOnlyList<Guid> orders, CancellationToken cancellationToken)
    {
        _store = DocumentStore.For(options =>
        {
            options.Connection(connectionString);
            options.DatabaseSchemaName = _schema;
            options.Events.DatabaseSchemaName = _schema;
            options.Events.AddEventType<RebuildOrderPlaced>();
            options.Events.AddEventType<RebuildOrderPaid>();
            options.Events.AddEventType<RebuildOrderShipped>();
            options.Projections.Add<MartenOrderSummaryProjection>(ProjectionLifecycle.Async);
            options.AutoCreateSchemaObjects = AutoCreate.All;
        });
        await _store.Storage.ApplyAllConfiguredChangesToDatabaseAsync();
        for (var first = 0; first < orders.Count; first += OrdersPerSession)
        {
            await using var session = Store.LightweightSession();
            for (var i = first; i < Math.Min(orders.Count, first + OrdersPerSession); i++)
            {
                session.Events.StartStream(orders[i], RebuildWorkload.EventsOf(orders[i], i));
            }

            await session.SaveChangesAsync(cancellationToken);
        }
    }

    public async Task RebuildAsync(CancellationToken cancellationToken)
    {
        using var daemon = await Store.BuildProjectionDaemonAsync();
        await daemon.RebuildProjectionAsync<MartenOrderSummaryProjection>(cancellationToken);
    }

    public async Task<int> CountCompleteAsync(CancellationToken cancellationToken)
    {
        await using var session = Store.QuerySession();
        return await session.Query<MartenOrderSummary>()
            .CountAsync(o => o.Status == RebuildWorkload.Shipped && o.PaymentReference != null && o.TrackingNumber != null, cancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        _store?.Dispose();
        await HeraldEventStoreContender.DropSchemaAsync(connectionString, _schema);
    }
}
