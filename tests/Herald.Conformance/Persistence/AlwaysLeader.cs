using Herald.Persistence;

namespace Herald.Conformance.Persistence;

/// <summary>
/// An election that grants every lease and never loses one: each node holding it stands for a leader that has not noticed
/// yet that another took over (its lock session was killed, say), so tests can check that fencing refuses the older one.
/// </summary>
public sealed class AlwaysLeader : ILeaderElection
{
    /// <inheritdoc/>
    public ValueTask<LeaderLease?> TryAcquireAsync(string resource, CancellationToken cancellationToken = default) => new(new Lease(resource));

    private sealed class Lease(string resource) : LeaderLease(resource)
    {
        protected override ValueTask ReleaseAsync() => ValueTask.CompletedTask;
    }
}
