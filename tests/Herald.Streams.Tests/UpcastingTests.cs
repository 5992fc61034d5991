using System.Text;
using Herald.EventSourcing;
using Herald.EventSourcing.Upcasting;
using Herald.Messages;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Streams.Tests;

/// <summary>
/// A processor over the event store reads through the upcasters registered in DI, as the consuming pipeline and the
/// aggregate repository do: an event stored at an old schema version reaches the topology migrated. It read the raw
/// store, so the old JSON was deserialized as it was (a renamed field came back as its default).
/// </summary>
public sealed class UpcastingTests
{
    private const string OrderType = "stream-upcast-order";

    [Fact]
    public async Task AnEventStoredAtAnOldSchemaVersion_ReachesTheTopologyThroughTheRegisteredUpcasters()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton(new EventUpcasterRegistry().Add(OrderType, 1, body =>
        {
            // Version 1 called the amount "price".
            body["amount"] = body["price"]!.DeepClone();
            return body;
        }));
        builder.Services.AddHerald(h => h
            .AddMessageType<Order>(OrderType, version: 2)
            .AddStream("upcast-totals", b => b.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId).Aggregate(() => 0m, (_, o, sum) => sum + o.Amount, "totals")));
        using var host = builder.Build();
        await host.StartAsync();

        var current = host.Services.GetRequiredService<EnvelopeFactory>().Create(new Order("o1", "p1", 1m, DateTimeOffset.UnixEpoch));
        var old = current with
        {
            SchemaVersion = 1,
            Body = Encoding.UTF8.GetBytes("""{"orderId":"o1","productId":"p1","price":12.5,"placedAt":"2026-01-01T00:00:00+00:00"}"""),
        };
        var head = (await host.Services.GetRequiredService<IEventStore>().AppendAsync("order-o1", ExpectedVersion.NoStream, [old])).LastPosition;

        var processor = host.Services.GetRequiredService<StreamProcessors>()["upcast-totals"];
        await processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30));
        var totals = await processor.QueryAllAsync<string, decimal>("totals");

        Assert.Equal(12.5m, Assert.Single(totals).Value);
        await host.StopAsync();
    }
}
