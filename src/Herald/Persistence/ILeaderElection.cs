namespace Herald.Persistence;

/// <summary>
/// The port that picks one leader per named resource among the nodes sharing a store, so work that must run in one place
/// at a time (the outbox relay, a projection's runner) runs there. The persistence package registers it:
/// <c>UsePostgres</c> uses a session advisory lock and <c>UseSqlite</c> a lock file, so one node leads across processes;
/// the default (the in-memory stores) elects within one host.
/// </summary>
/// <remarks>
/// A lease is held until it is disposed or lost. Losing it (its database connection dropped, say) fires
/// <see cref="LeaderLease.LeadershipLost"/>: stop the work, dispose the lease and try again. Another node may lead as soon as
/// the engine sees the loss, which can be before this node does, so the guarded work must tolerate a short overlap
/// (the relay's sends are at least once for that reason).
/// </remarks>
public interface ILeaderElection
{
    /// <summary>
    /// Tries once to become the leader of <paramref name="resource"/>: returns the lease, or null while another holder has
    /// it. Not re-entrant: a second call for a resource this node already leads returns null too.
    /// </summary>
    ValueTask<LeaderLease?> TryAcquireAsync(string resource, CancellationToken cancellationToken = default);

    /// <summary>
    /// Whether some node (this one included) leads <paramref name="resource"/> now, without taking it: so nodes counting
    /// each other by the resources they lead never mistake another's look for a leader. The answer may be stale as soon as
    /// it is given. The default looks by taking and giving back a lease, which a concurrent look sees as a leader; an
    /// engine answers without taking it (<c>UsePostgres</c> reads <c>pg_locks</c>).
    /// </summary>
    async ValueTask<bool> IsLedAsync(string resource, CancellationToken cancellationToken = default)
    {
        if (await TryAcquireAsync(resource, cancellationToken).ConfigureAwait(false) is not { } probe)
        {
            return true;
        }

        await probe.DisposeAsync().ConfigureAwait(false);
        return false;
    }
}
