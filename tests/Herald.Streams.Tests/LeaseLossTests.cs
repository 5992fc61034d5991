using System.Collections.Concurrent;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Streams.Tests;

public sealed class LeaseLossTests
{
    [Fact]
    public async Task APartitionWhoseLeaseIsLost_CommitsNothingMore()
    {
        var election = new ControlledElection();
        using var host = await ProcessorScenario.StartHostAsync(h => h.Services.AddSingleton<ILeaderElection>(election));
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        var checkpoints = host.Services.GetRequiredService<ICheckpointStore>();
        for (var i = 0; i < 8; i++)
        {
            await events.AppendAsync("order-" + i, ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(i))]);
        }

        var builder = new StreamBuilder();
        builder.Stream<Order>().GroupBy(o => o.ProductId).Count("orders");
        var options = new StreamProcessorOptions { Partitions = 2, PartitionBalanceInterval = TimeSpan.FromHours(1) }; // only the commit notices
        await using var processor = new StreamProcessor("lossy", builder.Build(), host.Services, options);
        await processor.StartAsync();
        await processor.WaitForPositionAsync(await events.GetLastPositionAsync()).WaitAsync(TimeSpan.FromSeconds(30));
        var before = await checkpoints.GetCheckpointAsync("stream:lossy:1");
        Assert.NotNull(before);

        // Partition 1 is someone else's now; more events for every product come.
        election.Lose("$stream:lossy:1");
        for (var i = 8; i < 16; i++)
        {
            await events.AppendAsync("order-" + i, ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(i))]);
        }

        var failure = await Assert.ThrowsAsync<LeaseLostException>(() => processor.Completion.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("lost partition 1", failure.Message, StringComparison.Ordinal);
        Assert.Equal(before, await checkpoints.GetCheckpointAsync("stream:lossy:1"));
        await host.StopAsync();
    }

    /// <summary>An election whose leases the test can take away.</summary>
    private sealed class ControlledElection : ILeaderElection
    {
        private readonly ConcurrentDictionary<string, Lease> _held = new(StringComparer.Ordinal);
        private readonly ConcurrentDictionary<string, bool> _taken = new(StringComparer.Ordinal);

        public ValueTask<LeaderLease?> TryAcquireAsync(string resource, CancellationToken cancellationToken = default)
        {
            var lease = new Lease(this, resource);
            return ValueTask.FromResult<LeaderLease?>(!_taken.ContainsKey(resource) && _held.TryAdd(resource, lease) ? lease : null);
        }

        public void Lose(string resource)
        {
            _taken[resource] = true;
            _held[resource].Lose();
        }

        private sealed class Lease(ControlledElection election, string resource) : LeaderLease(resource)
        {
            public void Lose() => SignalLost();

            protected override ValueTask ReleaseAsync()
            {
                election._held.TryRemove(new KeyValuePair<string, Lease>(Resource, this));
                return ValueTask.CompletedTask;
            }
        }
    }
}
