using Herald.Persistence;
using Xunit;

namespace Herald.Conformance.Persistence;

/// <summary>
/// The contract of <see cref="ILeaderElection"/>. An engine's test project derives from it and implements
/// <see cref="CreateContendersAsync"/>. Every test uses resources of its own, so runs may share a store.
/// </summary>
public abstract class LeaderElectionConformance
{
    /// <summary>
    /// Creates <paramref name="count"/> contenders that compete for the same resources: for an election across processes,
    /// one election per node on one shared store; for a single-process election, the same instance <paramref name="count"/> times.
    /// </summary>
    protected abstract ValueTask<IReadOnlyList<ILeaderElection>> CreateContendersAsync(int count);

    /// <summary>A resource name no other test uses.</summary>
    protected static string NewResource() => "conformance-" + Guid.NewGuid().ToString("N");

    [Fact]
    public async Task TryAcquire_ByManyContendersAtOnce_GrantsExactlyOneLease()
    {
        var contenders = await CreateContendersAsync(8);
        var resource = NewResource();

        var leases = await Task.WhenAll(contenders.Select(c => Task.Run(async () => await c.TryAcquireAsync(resource))));
        try
        {
            var lease = Assert.Single(leases, l => l is not null)!;
            Assert.Equal(resource, lease.Resource);
            Assert.True(lease.IsHeld);
            Assert.False(lease.LeadershipLost.IsCancellationRequested);
        }
        finally
        {
            await DisposeAllAsync(leases);
        }
    }

    [Fact]
    public async Task TryAcquire_OfAResourceAlreadyLed_ReturnsNull_EvenForTheLeadersOwnElection()
    {
        var contenders = await CreateContendersAsync(2);
        var resource = NewResource();
        await using var lease = await contenders[0].TryAcquireAsync(resource);
        Assert.NotNull(lease);

        Assert.Null(await contenders[1].TryAcquireAsync(resource));
        Assert.Null(await contenders[0].TryAcquireAsync(resource));
        Assert.True(lease.IsHeld);
    }

    [Fact]
    public async Task DisposingALease_FiresLeadershipLost_AndLetsAnotherContenderAcquire()
    {
        var contenders = await CreateContendersAsync(2);
        var resource = NewResource();
        var first = await contenders[0].TryAcquireAsync(resource);
        Assert.NotNull(first);
        Assert.Null(await contenders[1].TryAcquireAsync(resource));
        var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var registration = first.LeadershipLost.Register(stopped.SetResult);

        await first.DisposeAsync();

        Assert.True(stopped.Task.IsCompleted);
        Assert.False(first.IsHeld);
        await using var second = await contenders[1].TryAcquireAsync(resource);
        Assert.NotNull(second);
        Assert.True(second.IsHeld);

        // A second dispose gives up nothing more: the new leader keeps its lease.
        await first.DisposeAsync();
        Assert.Null(await contenders[0].TryAcquireAsync(resource));
        Assert.True(second.IsHeld);
    }

    [Fact]
    public async Task IsLed_TellsWhetherAnyContenderLeads_WithoutTakingTheResource()
    {
        var contenders = await CreateContendersAsync(2);
        var resource = NewResource();
        Assert.False(await contenders[0].IsLedAsync(resource));
        Assert.False(await contenders[1].IsLedAsync(resource));

        var lease = await contenders[0].TryAcquireAsync(resource);
        Assert.NotNull(lease);
        Assert.True(await contenders[0].IsLedAsync(resource));
        Assert.True(await contenders[1].IsLedAsync(resource));
        Assert.False(await contenders[1].IsLedAsync(NewResource()));

        await lease.DisposeAsync();
        Assert.False(await contenders[1].IsLedAsync(resource));
    }

    [Fact]
    public async Task IsLed_FromManyContendersAtOnce_NeverHoldsTheResource()
    {
        // Looks that took the resource, even for a moment, would make concurrent looks see a leader, and an acquire fail.
        var contenders = await CreateContendersAsync(4);
        var resource = NewResource();
        for (var round = 0; round < 20; round++)
        {
            var looks = await Task.WhenAll(contenders.Select(c => Task.Run(async () => await c.IsLedAsync(resource))));
            Assert.All(looks, Assert.False);
        }

        await using var lease = await contenders[3].TryAcquireAsync(resource);
        Assert.NotNull(lease);
    }

    [Fact]
    public async Task DifferentResources_AreLedIndependently()
    {
        var contenders = await CreateContendersAsync(2);
        var (one, two, three) = (NewResource(), NewResource(), NewResource());

        await using var first = await contenders[0].TryAcquireAsync(one);
        await using var second = await contenders[1].TryAcquireAsync(two);
        await using var third = await contenders[0].TryAcquireAsync(three);

        Assert.NotNull(first);
        Assert.NotNull(second);
        Assert.NotNull(third);
        await first.DisposeAsync();
        Assert.True(second.IsHeld);
        Assert.True(third.IsHeld);
        Assert.Null(await contenders[0].TryAcquireAsync(two));
    }

    [Fact]
    public async Task TryAcquire_WithACancelledToken_ThrowsAndLeavesTheResourceFree()
    {
        var contenders = await CreateContendersAsync(2);
        var resource = NewResource();
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await contenders[0].TryAcquireAsync(resource, cancelled.Token));

        await using var lease = await contenders[1].TryAcquireAsync(resource);
        Assert.NotNull(lease);
    }

    [Fact]
    public async Task ContendersAcquiringAndReleasingInALoop_NeverLeadTogether()
    {
        const int Rounds = 25;
        var contenders = await CreateContendersAsync(4);
        var resource = NewResource();
        var leaders = 0;
        var overlaps = 0;
        var acquired = 0;

        await Task.WhenAll(contenders.Select(contender => Task.Run(async () =>
        {
            for (var round = 0; round < Rounds; round++)
            {
                var lease = await contender.TryAcquireAsync(resource);
                if (lease is null)
                {
                    continue;
                }

                await using (lease)
                {
                    Interlocked.Increment(ref acquired);
                    if (Interlocked.Increment(ref leaders) != 1)
                    {
                        Interlocked.Increment(ref overlaps);
                    }

                    await Task.Yield();
                    Interlocked.Decrement(ref leaders);
                }
            }
        })));

        Assert.Equal(0, overlaps);
        Assert.InRange(acquired, 1, Rounds * contenders.Count);
    }

    private static async Task DisposeAllAsync(IEnumerable<LeaderLease?> leases)
    {
        foreach (var lease in leases)
        {
            if (lease is not null)
            {
                await lease.DisposeAsync();
            }
        }
    }
}
