using Herald.Conformance.Persistence;
using Herald.Persistence;

namespace Herald.Tests.Persistence;

/// <summary>The in-process default: its contenders are the callers of one instance (one host).</summary>
public sealed class InProcessLeaderElectionConformanceTests : LeaderElectionConformance
{
    protected override ValueTask<IReadOnlyList<ILeaderElection>> CreateContendersAsync(int count)
    {
        var election = new InProcessLeaderElection();
        return ValueTask.FromResult<IReadOnlyList<ILeaderElection>>([.. Enumerable.Repeat<ILeaderElection>(election, count)]);
    }

    [Fact]
    public async Task TwoInstances_ElectSeparately_OneLeaderPerHost()
    {
        var resource = NewResource();

        await using var first = await new InProcessLeaderElection().TryAcquireAsync(resource);
        await using var second = await new InProcessLeaderElection().TryAcquireAsync(resource);

        Assert.NotNull(first);
        Assert.NotNull(second);
    }
}
