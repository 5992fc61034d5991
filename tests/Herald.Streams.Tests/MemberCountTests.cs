using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Persistence;

namespace Herald.Streams.Tests;

/// <summary>How processes running one stream count each other to share its partitions.</summary>
public sealed class MemberCountTests
{
    [Fact]
    public async Task ProcessesCountingEachOtherAtOnce_NeverCountALookAsAProcess_AndGiveNoPartitionBack()
    {
        // One election for three processes, as one database; each lease it grants is held 20 ms before the caller gets it.
        // Processes that counted each other by taking and giving back the other member slots collided on the free one:
        // each then counted the other's look as a fourth process, took a share of one partition instead of two and gave
        // one back, to take it again later.
        var election = new SlowElection(TimeSpan.FromMilliseconds(20));
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var builder = new StreamBuilder();
        builder.Stream<Order>().GroupBy(o => o.ProductId).Count("orders");
        var topology = builder.Build();
        var options = new StreamProcessorOptions { Partitions = 4, PartitionBalanceInterval = TimeSpan.FromMilliseconds(5) };
        var services = new WithElection(host.Services, election);
        var processors = Enumerable.Range(0, 3).Select(_ => new StreamProcessor("counted", topology, services, options)).ToList();
        try
        {
            foreach (var processor in processors)
            {
                await processor.StartAsync();
            }

            // Settled: with three processes each one's share is two, so none holding more has one to give back (the first
            // to start held all four until it counted the others).
            await Eventually.UntilAsync(
                () => processors.Sum(p => p.OwnedPartitions.Count) == 4 && processors.All(p => p.OwnedPartitions.Count <= 2),
                "the three processes hold the four partitions between them, at most two each");
            var owned = processors.Select(p => p.OwnedPartitions.ToList()).ToList();
            var releasedBefore = election.PartitionsReleased;

            // About 40 more rounds of counting by each (three other slots a round).
            var looks = election.Looks;
            await Eventually.UntilAsync(() => election.Looks >= looks + (3 * 40 * 3), "40 more rounds of counting by each");

            Assert.Equal(releasedBefore, election.PartitionsReleased);
            Assert.Equal(owned, processors.Select(p => p.OwnedPartitions.ToList()).ToList());
        }
        finally
        {
            foreach (var processor in processors)
            {
                await processor.DisposeAsync();
            }
        }
    }

    private sealed class SlowElection(TimeSpan grant) : ILeaderElection
    {
        private readonly ConcurrentDictionary<string, Lease> _held = new(StringComparer.Ordinal);
        private int _looks;
        private int _partitionsReleased;

        public int Looks => Volatile.Read(ref _looks);

        public int PartitionsReleased => Volatile.Read(ref _partitionsReleased);

        public async ValueTask<LeaderLease?> TryAcquireAsync(string resource, CancellationToken cancellationToken = default)
        {
            if (resource.Contains(":member:", StringComparison.Ordinal))
            {
                Interlocked.Increment(ref _looks);
            }

            var lease = new Lease(this, resource);
            if (!_held.TryAdd(resource, lease))
            {
                return null;
            }

            await Task.Delay(grant, cancellationToken);
            return lease;
        }

        public ValueTask<bool> IsLedAsync(string resource, CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref _looks);
            return ValueTask.FromResult(_held.ContainsKey(resource));
        }

        private sealed class Lease(SlowElection election, string resource) : LeaderLease(resource)
        {
            protected override ValueTask ReleaseAsync()
            {
                election._held.TryRemove(new KeyValuePair<string, Lease>(Resource, this));
                if (!Resource.Contains(":member:", StringComparison.Ordinal))
                {
                    Interlocked.Increment(ref election._partitionsReleased);
                }

                return ValueTask.CompletedTask;
            }
        }
    }
}
