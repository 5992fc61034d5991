using System.Threading.Channels;
using Herald.Conformance;
using Herald.Persistence;

namespace Herald.Tests.Persistence;

/// <summary>
/// An election a test steers: each try goes to <see cref="Inner"/> (an in-process election) unless <see cref="FailNext"/>
/// is set, every try is reported on <see cref="Tries"/>, and every lease it grants can be lost on demand.
/// </summary>
internal sealed class ScriptedElection : ILeaderElection
{
    private readonly Channel<Lease?> _tries = Channel.CreateUnbounded<Lease?>();

    public InProcessLeaderElection Inner { get; } = new();

    /// <summary>When set, the next try throws it (the engine is unreachable).</summary>
    public Exception? FailNext { get; set; }

    /// <summary>When set, every lease granted is lost at once (a backend that reports the lease gone right after granting it).</summary>
    public bool LoseOnGrant { get; set; }

    /// <summary>Each try's outcome, in order: the lease granted, or null.</summary>
    public ChannelReader<Lease?> Tries => _tries.Reader;

    public async ValueTask<LeaderLease?> TryAcquireAsync(string resource, CancellationToken cancellationToken = default)
    {
        if (FailNext is { } failure)
        {
            FailNext = null;
            _tries.Writer.TryWrite(null);
            throw failure;
        }

        var inner = await Inner.TryAcquireAsync(resource, cancellationToken);
        var lease = inner is null ? null : new Lease(inner);
        if (LoseOnGrant)
        {
            lease?.Lose();
        }

        _tries.Writer.TryWrite(lease);
        return lease;
    }

    /// <summary>Waits for the next try, with a deadline.</summary>
    public async Task<Lease?> NextTryAsync() => await _tries.Reader.ReadAsync().AsTask().WaitAsync(Eventually.DefaultTimeout);

    /// <summary>A granted lease that the test can make lost; it releases the in-process lease it wraps.</summary>
    internal sealed class Lease(LeaderLease inner) : LeaderLease(inner.Resource)
    {
        public bool Released { get; private set; }

        public void Lose() => SignalLost();

        protected override async ValueTask ReleaseAsync()
        {
            Released = true;
            await inner.DisposeAsync();
        }
    }
}
