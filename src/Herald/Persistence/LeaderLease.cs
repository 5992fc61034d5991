namespace Herald.Persistence;

/// <summary>
/// Leadership of one resource, from <see cref="ILeaderElection.TryAcquireAsync"/>: held until it is disposed (which lets
/// another contender acquire it) or lost (<see cref="LeadershipLost"/> fires). Adapters derive from it.
/// </summary>
public abstract class LeaderLease : IAsyncDisposable
{
    // Never disposed: callers may still hold LeadershipLost after the lease is gone, and a source without a timer holds
    // nothing that needs freeing.
    private readonly CancellationTokenSource _ended = new();
    private int _released;

    /// <summary>Creates a lease of <paramref name="resource"/>, held until disposed or <see cref="SignalLost"/> is called.</summary>
    protected LeaderLease(string resource)
    {
        ArgumentException.ThrowIfNullOrEmpty(resource);
        Resource = resource;
        LeadershipLost = _ended.Token;
    }

    /// <summary>The resource this lease leads.</summary>
    public string Resource { get; }

    /// <summary>
    /// Cancelled when this node stops leading: the lease was lost, or it is being disposed. Run the guarded work with it, so
    /// the work stops before another node can take over.
    /// </summary>
    public CancellationToken LeadershipLost { get; }

    /// <summary>Whether the lease is still held (neither lost nor disposed).</summary>
    public bool IsHeld => !LeadershipLost.IsCancellationRequested;

    /// <summary>Stops leading: fires <see cref="LeadershipLost"/> first, so the guarded work stops, then releases the lease.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _released, 1) != 0)
        {
            return;
        }

        SignalLost();
        await ReleaseAsync().ConfigureAwait(false);
    }

    /// <summary>Called by the adapter when it finds the lease gone (its connection dropped, say): fires <see cref="LeadershipLost"/>.</summary>
    protected void SignalLost()
    {
        _ended.Cancel();
    }

    /// <summary>Gives the leadership up in the engine, so another contender can acquire it; called once, after <see cref="LeadershipLost"/> fired.</summary>
    protected abstract ValueTask ReleaseAsync();
}
