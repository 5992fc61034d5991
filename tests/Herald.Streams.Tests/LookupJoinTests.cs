using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Messages;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Streams.Tests;

[MessageType("stream-test-product-listed")]
public sealed record ProductListed(string ProductId, string Title);

public sealed record ProductInfo(string ProductId, string Title);

/// <summary>A projection keeping the product catalogue, which the stream joins orders with.</summary>
public sealed class Catalog : Projection
{
    public static readonly ReadModelTable<ProductInfo> Products = new("stream_test_products");

    public Catalog()
        : base("stream-test-catalog")
    {
        Table(Products);
        On<ProductListed>((e, context, _) => context.UpsertAsync(Products, e.ProductId, new ProductInfo(e.ProductId, e.Title)));
    }
}

/// <summary>Orders joined with a projection's read-model table: inner and left, before the partitioner and after state.</summary>
internal static class LookupScenario
{
    public static void Configure(HeraldBuilder h) => h.AddProjection(new Catalog(), ProjectionMode.Async);

    public static async Task RunAsync(Action<HeraldBuilder> engine)
    {
        using var host = await ProcessorScenario.StartHostAsync(h =>
        {
            engine(h);
            Configure(h);
        });
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        foreach (var product in new[] { "p0", "p1", "p2" }) // p3 is not listed
        {
            await events.AppendAsync("product-" + product, ExpectedVersion.NoStream, [envelopes.Create(new ProductListed(product, "Title of " + product))]);
        }

        // The catalogue is projected before the orders are processed: the join reads the table when a record comes.
        var readModels = host.Services.GetRequiredService<ReadModels>();
        await Eventually.UntilAsync(async () => await readModels.GetAsync(Catalog.Products, "p2") is not null, "the catalogue is projected");

        // The last order's own position, not GetLastPositionAsync: on PostgreSQL an older transaction elsewhere on the
        // server (another test's) holds the readable head back, and that returns what is readable after 10 s.
        var head = 0L;
        for (var i = 0; i < 8; i++)
        {
            head = Math.Max(head, (await events.AppendAsync("order-" + i, ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(i))])).LastPosition);
        }

        var inner = new ConcurrentQueue<string>();
        var left = new ConcurrentQueue<string>();
        var counted = new ConcurrentQueue<string>();
        var catalog = StreamTables.ReadModel<string, ProductInfo>(Catalog.Products);
        var builder = new StreamBuilder();
        var byProduct = builder.Stream<Order>().SelectKey(o => o.ProductId);
        byProduct.Join(catalog, (o, p) => $"{o.OrderId}:{p.Title}").To(StreamSinks.Callback<string, string>(o => inner.Enqueue(o.Value)));
        byProduct.LeftJoin(catalog, (o, p) => $"{o.OrderId}:{p?.Title ?? "-"}").To(StreamSinks.Callback<string, string>(o => left.Enqueue(o.Value)));
        byProduct.GroupByKey().Count("orders").ToStream() // after state: the join runs in the partition's task
            .Join(catalog, (count, p) => $"{p.Title}={count}").To(StreamSinks.Callback<string, string>(o => counted.Enqueue(o.Value)));
        await using var processor = new StreamProcessor("catalog-join", builder.Build(), host.Services, new StreamProcessorOptions { Partitions = 2 });
        await processor.StartAsync();
        await processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30));

        // OrderAt(i) is for product p(i % 4): orders 3 and 7 are for the unlisted p3.
        Assert.Equal(["o0:Title of p0", "o1:Title of p1", "o2:Title of p2", "o4:Title of p0", "o5:Title of p1", "o6:Title of p2"], inner.Order(StringComparer.Ordinal));
        Assert.Equal(["o0:Title of p0", "o1:Title of p1", "o2:Title of p2", "o3:-", "o4:Title of p0", "o5:Title of p1", "o6:Title of p2", "o7:-"], left.Order(StringComparer.Ordinal));
        Assert.Equal(["Title of p0=1", "Title of p0=2", "Title of p1=1", "Title of p1=2", "Title of p2=1", "Title of p2=2"], counted.Order(StringComparer.Ordinal));
        await host.StopAsync();
    }
}

public sealed class LookupJoinTests : IDisposable
{
    private readonly string _file = TestSqlite.NewFile("lookup");

    [Fact]
    public async Task InMemory_OrdersJoinTheCatalogProjectionsReadModel() => await LookupScenario.RunAsync(_ => { });

    [Fact]
    public async Task Sqlite_OrdersJoinTheCatalogProjectionsReadModel() =>
        await LookupScenario.RunAsync(h => h.UseSqlite(_file).UseSqliteStreamState());

    [Fact]
    public async Task ALookupThatFails_StopsTheRunInsteadOfDeadLetteringTheEvent()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        await events.AppendAsync("order-1", ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(1))]);
        var builder = new StreamBuilder();
        builder.Stream<Order>().SelectKey(o => o.ProductId).Join(new FailingLookup(), (o, p) => o.OrderId + p).To(StreamSinks.Callback<string, string>(_ => { }));
        await using var processor = new StreamProcessor("failing-lookup", builder.Build(), host.Services);
        await processor.StartAsync();

        var failure = await Assert.ThrowsAnyAsync<Exception>(() => processor.Completion.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("could not read its table", failure.ToString(), StringComparison.Ordinal);
        Assert.Empty(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:failing-lookup" }));
        await host.StopAsync();
    }

    public void Dispose() => TestSqlite.Delete(_file);

    private sealed class FailingLookup : IStreamTableLookup<string, string>
    {
        public ValueTask<string?> GetAsync(string key, IServiceProvider services, CancellationToken cancellationToken = default) =>
            throw new InvalidOperationException("The table is unreachable.");
    }
}

public sealed class PostgresLookupJoinTests : IAsyncLifetime
{
    private static readonly string ConnectionString = TestPostgres.ConnectionString;

    private readonly string _schema = TestPostgres.NewSchema();

    [Fact]
    public async Task Postgres_OrdersJoinTheCatalogProjectionsReadModel() =>
        await LookupScenario.RunAsync(h => h.UsePostgres(ConnectionString, o => o.Schema = _schema).UsePostgresStreamState());

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => TestPostgres.DropAsync(_schema);
}
