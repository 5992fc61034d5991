using Herald.Benchmarks.EventStore;
using Herald.Benchmarks.InProcess;
using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Messages;
using Herald.Projections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Benchmarks.Projections;

/// <summary>What Herald's projection keeps per order (a JSON document in a read-model table).</summary>
public sealed record HeraldOrderSummary(string Id, string Customer, decimal Total, int Lines, string Status, string? PaymentReference, string? TrackingNumber);

/// <summary>The read model, written the way the docs show: an upsert on the first event, an update of the document on the others.</summary>
internal sealed class HeraldOrderSummaries : Projection
{
    public const string ProjectionName = "bench-order-summaries";

    public static readonly ReadModelTable<HeraldOrderSummary> Orders = new("bench_order_summaries");

    public HeraldOrderSummaries()
        : base(ProjectionName)
    {
        Table(Orders);
        On<RebuildOrderPlaced>((e, context, _) =>
            context.UpsertAsync(Orders, e.OrderId.ToString(), new HeraldOrderSummary(e.OrderId.ToString(), e.Customer, e.Total, e.Lines, "Placed", null, null)));
        On<RebuildOrderPaid>((e, context, _) =>
            context.UpdateExistingAsync(Orders, e.OrderId.ToString(), o => o with { Status = "Paid", PaymentReference = e.PaymentReference }));
        On<RebuildOrderShipped>((e, context, _) =>
            context.UpdateExistingAsync(Orders, e.OrderId.ToString(), o => o with { Status = RebuildWorkload.Shipped, TrackingNumber = e.TrackingNumber }));
    }
}

/// <summary>
/// Herald through the public API: a host with <c>UsePostgres</c> on a fresh schema and the async projection above; events
/// appended with <c>IEventStore.AppendAsync</c>, one stream per order; the rebuild is <c>ProjectionManager.RebuildAsync</c>.
/// </summary>
internal sealed class HeraldRebuildContender(string connectionString) : IRebuildContender
{
    private static readonly ProjectionOptions Defaults = new();

    private const int Writers = 8;

    private readonly string _schema = $"herald_bench_{Guid.NewGuid():N}"[..24];
    private IHost? _host;

    public string Name => "Herald";

    public string Setup =>
        $"`services.AddHerald(h => h.UsePostgres(cs, o => o.Schema = fresh).AddProjection<OrderSummaries>())`, defaults otherwise (async projection; `ProjectionOptions` defaults: reads of {Defaults.BatchSize} events, applied in units of work of up to {Defaults.CommitEvery} events, one checkpoint and one commit each); " +
        "the projection declares one `ReadModelTable<OrderSummary>` and three handlers: `UpsertAsync` on the placed event, `UpdateExistingAsync` (a `with` copy) on the other two. " +
        "Rebuild: `ProjectionManager.RebuildAsync(name)`, blue/green: replays the log into a new generation of the table while the old one serves, switches reads to it in one transaction and drops the old one; timed until it returns.";

    private IServiceProvider Services => (_host ?? throw new InvalidOperationException("Not started.")).Services;

    public async Task StartAsync(IReadOnlyList<Guid> orders, CancellationToken cancellationToken)
    {
        var builder = Hosts.CreateBuilder();
        builder.Services.AddHerald(h => h
            .UsePostgres(connectionString, o => o.Schema = _schema)
            .Configure(o => o.StartConsumer = false)
            .AddProjection<HeraldOrderSummaries>());
        _host = builder.Build();
        await _host.StartAsync(cancellationToken);

        var store = Services.GetRequiredService<IEventStore>();
        var envelopes = Services.GetRequiredService<EnvelopeFactory>();
        var next = -1;
        await Task.WhenAll(Enumerable.Range(0, Writers).Select(_ => Task.Run(
            async () =>
            {
                for (var i = Interlocked.Increment(ref next); i < orders.Count; i = Interlocked.Increment(ref next))
                {
                    var events = RebuildWorkload.EventsOf(orders[i], i).Select(e => envelopes.Create(e)).ToArray();
                    await store.AppendAsync($"order-{orders[i]:N}", ExpectedVersion.NoStream, events, cancellationToken);
                }
            },
            cancellationToken)));

        // The live projection catches up before the first rebuild, so a rebuild never races the first pass.
        var manager = Services.GetRequiredService<ProjectionManager>();
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (!(await manager.GetStatusAsync(HeraldOrderSummaries.ProjectionName, cancellationToken)).IsRunningHere)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("The projection did not start on the bench's host.");
            }

            await Task.Delay(50, cancellationToken);
        }

        await manager.WaitForPositionAsync(HeraldOrderSummaries.ProjectionName, await store.GetLastPositionAsync(cancellationToken), cancellationToken);
    }

    public Task RebuildAsync(CancellationToken cancellationToken) =>
        Services.GetRequiredService<ProjectionManager>().RebuildAsync(HeraldOrderSummaries.ProjectionName, cancellationToken);

    public async Task<int> CountCompleteAsync(CancellationToken cancellationToken)
    {
        var readModels = Services.GetRequiredService<ReadModels>();
        var complete = 0;
        string? after = null;
        do
        {
            var page = await readModels.QueryAsync(
                HeraldOrderSummaries.Orders,
                new ReadModelQuery { Where = new Dictionary<string, string> { ["status"] = RebuildWorkload.Shipped }, Limit = 1000, AfterId = after },
                cancellationToken);
            complete += page.Items.Count(o => o.PaymentReference is not null && o.TrackingNumber is not null);
            after = page.NextAfterId;
        }
        while (after is not null);

        return complete;
    }

    public async ValueTask DisposeAsync()
    {
        if (_host is not null)
        {
            await _host.StopAsync();
            _host.Dispose();
        }

        await HeraldEventStoreContender.DropSchemaAsync(connectionString, _schema);
    }
}
