using System.Text;
using Herald.EventSourcing;
using Herald.EventSourcing.Upcasting;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
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
        using var host = await StartHostAsync("upcast-totals", body =>
        {
            // Version 1 called the amount "price".
            body["amount"] = body["price"]!.DeepClone();
            return body;
        });

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

    /// <summary>
    /// An event whose upcaster throws could not be read at all: the subscription took the failure for the store's and read it
    /// again every few seconds forever, so the stream stalled at that event and nothing was dead-lettered.
    /// </summary>
    [Fact]
    public async Task AnEventTheUpcastersCannotMigrate_IsDeadLetteredAsUndecodable_AndTheProcessorGoesOn()
    {
        using var host = await StartHostAsync("upcast-poison", body => body["price"] is null ? throw new InvalidOperationException("no price") : body);

        var good = host.Services.GetRequiredService<EnvelopeFactory>().Create(new Order("o1", "p1", 3m, DateTimeOffset.UnixEpoch));
        var poison = good with
        {
            MessageId = Guid.CreateVersion7(),
            SchemaVersion = 1,
            Body = Encoding.UTF8.GetBytes("""{"orderId":"o0","productId":"p1","placedAt":"2026-01-01T00:00:00+00:00"}"""),
        };
        var store = host.Services.GetRequiredService<IEventStore>();
        await store.AppendAsync("order-o0", ExpectedVersion.NoStream, [poison]);
        var head = (await store.AppendAsync("order-o1", ExpectedVersion.NoStream, [good])).LastPosition;

        var processor = host.Services.GetRequiredService<StreamProcessors>()["upcast-poison"];
        await processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(15));

        Assert.Equal(3m, Assert.Single(await processor.QueryAllAsync<string, decimal>("totals")).Value);
        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:upcast-poison" }));
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.Equal(poison.MessageId, deadLetter.Envelope.MessageId);
        Assert.Equal(1, deadLetter.Envelope.SchemaVersion);
        Assert.Contains("no price", deadLetter.ErrorMessage, StringComparison.Ordinal);
        await host.StopAsync();
    }

    [Fact]
    public async Task AnEventStoredUnderAFormerTypeName_ReachesTheTopologyAsTheCurrentType()
    {
        // The processor reads $all filtered on its source types' names: the former name was not selected at all.
        using var host = await StartHostAsync("upcast-renamed", body => body, upcasters => upcasters.AddRename("stream-upcast-order-placed", OrderType));

        var current = host.Services.GetRequiredService<EnvelopeFactory>().Create(new Order("o1", "p1", 4m, DateTimeOffset.UnixEpoch));
        var head = (await host.Services.GetRequiredService<IEventStore>().AppendAsync("order-o1", ExpectedVersion.NoStream, [current with { MessageType = "stream-upcast-order-placed" }])).LastPosition;

        var processor = host.Services.GetRequiredService<StreamProcessors>()["upcast-renamed"];
        await processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(4m, Assert.Single(await processor.QueryAllAsync<string, decimal>("totals")).Value);
        await host.StopAsync();
    }

    /// <summary>
    /// An event stored below its type's registered version that no upcaster migrates is dead-lettered as undecodable, as the
    /// consuming pipeline does: it was read as the current shape (here its amount, then called "price", as 0).
    /// </summary>
    [Fact]
    public async Task AnEventBelowItsTypesRegisteredVersionThatNoUpcasterMigrates_IsDeadLetteredAsUndecodable_NotReadAsTheCurrentShape()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h
            .AddMessageType<Sale>("stream-upcast-sale", version: 2)
            .AddStream("upcast-unmigrated", b => b.Stream<Sale>(s => s.At).GroupBy(s => s.ProductId).Aggregate(() => 0m, (_, s, sum) => sum + s.Amount, "totals")));
        using var host = builder.Build();
        await host.StartAsync();

        var current = host.Services.GetRequiredService<EnvelopeFactory>().Create(new Sale("p1", 3m, DateTimeOffset.UnixEpoch));
        var old = current with
        {
            MessageId = Guid.CreateVersion7(),
            SchemaVersion = 1,
            Body = Encoding.UTF8.GetBytes("""{"productId":"p1","price":12.5,"at":"2026-01-01T00:00:00+00:00"}"""),
        };
        var store = host.Services.GetRequiredService<IEventStore>();
        await store.AppendAsync("sale-0", ExpectedVersion.NoStream, [old]);
        var head = (await store.AppendAsync("sale-1", ExpectedVersion.NoStream, [current])).LastPosition;

        var processor = host.Services.GetRequiredService<StreamProcessors>()["upcast-unmigrated"];
        await processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(15));

        Assert.Equal(3m, Assert.Single(await processor.QueryAllAsync<string, decimal>("totals")).Value);
        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:upcast-unmigrated" }));
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.Equal(old.MessageId, deadLetter.Envelope.MessageId);
        Assert.Contains("registered at v2", deadLetter.ErrorMessage, StringComparison.Ordinal);
        await host.StopAsync();
    }

    /// <summary>A started host whose stream <paramref name="name"/> sums order amounts per product, with one upcaster from v1.</summary>
    private static async Task<IHost> StartHostAsync(
        string name, Func<System.Text.Json.Nodes.JsonNode, System.Text.Json.Nodes.JsonNode> fromV1, Action<EventUpcasterRegistry>? configure = null)
    {
        var builder = Host.CreateApplicationBuilder();
        var upcasters = new EventUpcasterRegistry().Add(OrderType, 1, fromV1);
        configure?.Invoke(upcasters);
        builder.Services.AddSingleton(upcasters);
        builder.Services.AddHerald(h => h
            .AddMessageType<Order>(OrderType, version: 2)
            .AddStream(name, b => b.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId).Aggregate(() => 0m, (_, o, sum) => sum + o.Amount, "totals")));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }
}

public sealed record Sale(string ProductId, decimal Amount, DateTimeOffset At);
