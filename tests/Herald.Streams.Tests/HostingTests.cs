using Herald.EventSourcing;
using Herald.Messages;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Streams.Tests;

public sealed class HostingTests
{
    [Fact]
    public async Task AddStream_RunsTheProcessorInTheHost_AndItsStateIsQueryable()
    {
        using var host = await ProcessorScenario.StartHostAsync(h => h.AddStream(
            "orders-per-product",
            b => b.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId).WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(5))).Count("per-5-minutes")));
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        for (var i = 0; i < 20; i++)
        {
            await events.AppendAsync("order-" + i, ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(i))]);
        }

        var processor = host.Services.GetRequiredService<StreamProcessors>()["orders-per-product"];
        await processor.WaitForPositionAsync(await events.GetLastPositionAsync()).WaitAsync(TimeSpan.FromSeconds(30));

        var windows = await processor.QueryWindowsAsync<string, long>("per-5-minutes", "p0", DateTimeOffset.MinValue, DateTimeOffset.MaxValue);
        Assert.Equal([4L, 1L], windows.Select(w => w.Value)); // p0: orders 0, 4, 8, 12 in [0, 5) and 16 in [5, 10)
        await host.StopAsync();
    }

    [Fact]
    public void AddStream_WithAnInvalidTopology_ThrowsAtRegistration()
    {
        var services = new ServiceCollection();

        var error = Assert.Throws<StreamTopologyException>(() => services.AddHerald(h => h.AddStream(
            "bad", b => b.Stream<Order>().GroupByKey().WindowedBy(TumblingWindows.Of(TimeSpan.Zero)).Count("c"))));

        Assert.Contains("window size is not positive", error.Message, StringComparison.Ordinal);
    }
}
