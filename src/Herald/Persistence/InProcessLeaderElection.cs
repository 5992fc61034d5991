using System.Collections.Concurrent;

namespace Herald.Persistence;

/// <summary>
/// The default <see cref="ILeaderElection"/>: one leader per resource among the callers of this instance (one per host).
/// Right for the in-memory stores; stores shared by several processes register an election of their own
/// (<c>UsePostgres</c> and <c>UseSqlite</c> do).
/// </summary>
internal sealed class InProcessLeaderElection : ILeaderElection
{
    private readonly ConcurrentDictionary<string, Lease> _leaders = new(StringComparer.Ordinal);

    public ValueTask<LeaderLease?> TryAcquireAsync(string resource, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(resource);
        cancellationToken.ThrowIfCancellationRequested();
        var lease = new Lease(this, resource);
        return ValueTask.FromResult<LeaderLease?>(_leaders.TryAdd(resource, lease) ? lease : null);
    }

    public ValueTask<bool> IsLedAsync(string resource, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(resource);
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult(_leaders.ContainsKey(resource));
    }

    private sealed class Lease(InProcessLeaderElection election, string resource) : LeaderLease(resource)
    {
        protected override ValueTask ReleaseAsync()
        {
            // Removes only this lease: a later leader of the same resource keeps its entry.
            election._leaders.TryRemove(new KeyValuePair<string, Lease>(Resource, this));
            return ValueTask.CompletedTask;
        }
    }
}
