using Herald.Conformance.Reliability;
using Herald.Hosting;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Herald.Tests.Reliability;

public sealed class DeadLetterMonitorTests
{
    [Fact]
    public async Task Alert_OfACountHoveringAtTheThreshold_FiresOnce_AndReArmsOnlyOnceTheCountFellToHalfOfIt()
    {
        // An endpoint at its threshold whose operator retries a message that still fails: the count dips by one and comes
        // back. The alert re-armed on the dip, so every such retry paged again.
        var store = new InMemoryDeadLetterStore();
        var alerts = new FailureInjectionTests.RecordingAlert();
        await using var services = new ServiceCollection().AddSingleton<IDeadLetterAlert>(alerts).BuildServiceProvider();
        using var monitor = new DeadLetterMonitor(
            store, services, Options.Create(new DeadLetterOptions { AlertThreshold = 4 }), Options.Create(new HeraldOptions { EndpointName = "orders" }), TimeProvider.System);
        var letters = new List<DeadLetter>();

        await AddAsync(4);
        Assert.Single(alerts.Received);

        for (var i = 0; i < 3; i++)
        {
            await DeleteAsync(1);
            await AddAsync(1);
        }

        await DeleteAsync(1);
        Assert.Single(alerts.Received);

        await DeleteAsync(1);
        await AddAsync(2);
        Assert.Equal(2, alerts.Received.Count);
        Assert.Equal(4, alerts.Received[^1].Count);

        async Task AddAsync(int count)
        {
            for (var i = 0; i < count; i++)
            {
                var deadLetter = DeadLetterStoreConformance.NewDeadLetter("orders");
                await store.AddAsync(deadLetter);
                letters.Add(deadLetter);
            }

            await monitor.RefreshAsync("orders");
        }

        async Task DeleteAsync(int count)
        {
            for (var i = 0; i < count; i++)
            {
                await store.DeleteAsync(letters[^1].Id);
                letters.RemoveAt(letters.Count - 1);
            }

            await monitor.RefreshAsync("orders");
        }
    }
}
