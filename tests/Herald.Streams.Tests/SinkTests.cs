using Herald.EventSourcing;
using Herald.Messages;
using Herald.Persistence;
using Herald.Projections;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Streams.Tests;

public sealed class SinkTests
{
    [Fact]
    public async Task ReadModelSink_WritesTheLatestValuePerKey_AndSessionsAreQueryable()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        for (var i = 0; i < 8; i++)
        {
            await events.AppendAsync("order-" + i, ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(i))]);
        }

        var table = new ReadModelTable<ProductTotal>("stream_product_totals");
        var builder = new StreamBuilder();
        var perProduct = builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId);
        perProduct.Aggregate(() => 0m, (_, o, sum) => sum + o.Amount, "totals").ToStream()
            .Map((product, total) => new ProductTotal(product, total))
            .To(StreamSinks.ReadModel<string, ProductTotal>(table, (product, _) => product));
        perProduct.WindowedBy(SessionWindows.WithGap(TimeSpan.FromMinutes(2))).Count("sessions");
        await using var processor = new StreamProcessor("sinks", builder.Build(), host.Services);
        await processor.StartAsync();
        await processor.WaitForPositionAsync(await events.GetLastPositionAsync()).WaitAsync(TimeSpan.FromSeconds(30));

        var readModels = host.Services.GetRequiredService<ReadModels>();
        Assert.Equal(new ProductTotal("p1", 2 + 6), await readModels.GetAsync(table, "p1")); // orders 1 and 5
        var sessions = await processor.QueryWindowsAsync<string, long>("sessions", "p0", DateTimeOffset.MinValue, DateTimeOffset.MaxValue);
        var session = Assert.Single(sessions); // p0 every 80 s: one session of orders 0 and 4
        Assert.Equal(2L, session.Value);
        Assert.Equal(TimeSpan.FromSeconds(80), session.Key.Window.End - session.Key.Window.Start);
        await host.StopAsync();
    }

    [Theory]
    [InlineData("a\0b", "p1")]
    [InlineData("p1", "a\0b")]
    public async Task ReadModelSink_RefusesADocumentOrIdHoldingANulCharacter_NamingProcessorTableAndId(string product, string documentId)
    {
        // Regression (round-4 review of the projections): the sink wrote past the projections' check, so PostgreSQL failed
        // the commit with a bare 22P05 (or 22021 for the id) while SQLite and memory stored the document.
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var table = new ReadModelTable<ProductTotal>("stream_nul_totals");
        var sink = StreamSinks.ReadModel<string, ProductTotal>(table, (_, _) => documentId);

        var refused = await Assert.ThrowsAsync<InvalidOperationException>(async () =>
            await host.Services.GetRequiredService<UnitOfWorkRunner>().RunAsync(async (services, token) =>
                await sink.WriteAsync(
                    [new StreamOutput<string, ProductTotal>("k", new ProductTotal(product, 1), DateTimeOffset.UnixEpoch)],
                    new StreamSinkContext("nul-sink", services, services.GetRequiredService<IUnitOfWork>()),
                    token)));

        Assert.Contains("'nul-sink'", refused.Message, StringComparison.Ordinal);
        Assert.Contains("'stream_nul_totals'", refused.Message, StringComparison.Ordinal);
        Assert.Contains("U+0000", refused.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("\0", refused.Message, StringComparison.Ordinal);
        Assert.Null(await host.Services.GetRequiredService<ReadModels>().GetAsync(table, documentId));
        await host.StopAsync();
    }
}

public sealed record ProductTotal(string ProductId, decimal Total);
