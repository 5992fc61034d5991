using Herald.Persistence;

namespace Herald.Streams;

public sealed partial class StreamProcessor
{
    private readonly Dictionary<int, LeaderLease> _leases = [];
    private (int Index, LeaderLease Lease)? _member;
    private CancellationTokenSource? _balancing;
    private Task _balanceLoop = Task.CompletedTask;

    private string PartitionResource(int partition) => $"$stream:{Name}:{partition}";

    private string MemberResource(int slot) => $"$stream:{Name}:member:{slot}";

    private void StartBalancing()
    {
        _balancing = new CancellationTokenSource();
        var stopping = _balancing.Token;
        _balanceLoop = Task.Run(() => BalanceLoopAsync(stopping), CancellationToken.None);
    }

    private async Task StopBalancingAsync()
    {
        if (Interlocked.Exchange(ref _balancing, null) is not { } balancing)
        {
            return;
        }

        await balancing.CancelAsync().ConfigureAwait(false);
        await _balanceLoop.ConfigureAwait(false);
        balancing.Dispose();
    }

    private async Task BalanceLoopAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(_options.PartitionBalanceInterval, _time, stopping).ConfigureAwait(false);
                await _switch.WaitAsync(stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            try
            {
                await BalanceAsync(stopping).ConfigureAwait(false);
            }
            catch (Exception ex) when (!stopping.IsCancellationRequested)
            {
                // The election or the store is unreachable: try again next round.
                Log.BalanceFailed(_logger, ex, Name, _options.PartitionBalanceInterval);
            }
            catch (OperationCanceledException)
            {
                // Stopping.
            }
            finally
            {
                _switch.Release();
            }
        }
    }

    /// <summary>
    /// One round of sharing the partitions (called holding the switch): each process running the stream holds a member
    /// slot (<c>$stream:{name}:member:{i}</c>); counting the held slots gives the number of processes, and each takes
    /// its fair share (partitions / processes, rounded up) of the partition leases (<c>$stream:{name}:{partition}</c>):
    /// it gives extras back after committing them, and takes free ones — those another process gave back or lost with
    /// it. When the set it holds changes, the run restarts on the new set from the committed state.
    /// </summary>
    private async Task BalanceAsync(CancellationToken cancellationToken)
    {
        var election = _election!;
        if (_run is { Failure: not null, Stopped: false })
        {
            return; // The failed run stops and reports through Completion.
        }

        foreach (var (partition, lease) in _leases.Where(l => !l.Value.IsHeld).ToList())
        {
            _leases.Remove(partition);
            await lease.DisposeAsync().ConfigureAwait(false);
        }

        if (_member is { Lease.IsHeld: false } lost)
        {
            await lost.Lease.DisposeAsync().ConfigureAwait(false);
            _member = null;
        }

        var count = _options.Partitions;
        for (var slot = 0; slot < count && _member is null; slot++)
        {
            if (await election.TryAcquireAsync(MemberResource(slot), cancellationToken).ConfigureAwait(false) is { } lease)
            {
                _member = (slot, lease);
            }
        }

        var share = 0;
        if (_member is { } me)
        {
            var members = 1;
            for (var slot = 0; slot < count; slot++)
            {
                if (slot == me.Index)
                {
                    continue;
                }

                // A look that takes nothing: two processes probing a free slot at once by taking it each counted the other's
                // probe as a member, took too small a share and gave partitions back (MemberCountTests).
                if (await election.IsLedAsync(MemberResource(slot), cancellationToken).ConfigureAwait(false))
                {
                    members++;
                }
            }

            share = (count + members - 1) / members;
        }

        var next = new SortedSet<int>(_leases.Keys);
        while (next.Count > share)
        {
            next.Remove(next.Max);
        }

        // Start where this member's share would begin, so processes starting together seldom want the same partitions.
        var offset = (_member?.Index ?? 0) * Math.Max(share, 1);
        for (var i = 0; i < count && next.Count < share; i++)
        {
            var partition = (offset + i) % count;
            if (_leases.ContainsKey(partition))
            {
                continue;
            }

            if (await election.TryAcquireAsync(PartitionResource(partition), cancellationToken).ConfigureAwait(false) is { } lease)
            {
                _leases[partition] = lease;
                next.Add(partition);
            }
        }

        if (_run is { Stopped: false } current && next.SetEquals(current.Partitions.Keys))
        {
            return;
        }

        // Commit what the current run holds before another process may take a partition it gives back.
        if (_run is { Stopped: false } old)
        {
            await StopRunAsync(old).ConfigureAwait(false);
            if (old.Failure is not null)
            {
                // It failed during this round (or in its last commits): a new run would hide that; the run's watcher
                // stops the processor and faults Completion, as for a failure between rounds.
                return;
            }
        }

        foreach (var partition in _leases.Keys.Where(p => !next.Contains(p)).ToList())
        {
            await _leases[partition].DisposeAsync().ConfigureAwait(false);
            _leases.Remove(partition);
        }

        await StartRunAsync(next, cancellationToken).ConfigureAwait(false);
    }

    private async Task ReleaseLeasesAsync()
    {
        foreach (var lease in _leases.Values)
        {
            await lease.DisposeAsync().ConfigureAwait(false);
        }

        _leases.Clear();
        if (_member is { } member)
        {
            await member.Lease.DisposeAsync().ConfigureAwait(false);
            _member = null;
        }
    }
}
