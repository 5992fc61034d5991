using Confluent.Kafka;

namespace Herald.Kafka.Transport;

/// <summary>
/// What one consumer has taken from one partition during one assignment, in offset order, and how far it may commit:
/// up to (not including) the oldest offset not yet finished. Messages of different keys finish out of order when they
/// run in parallel; the commit only moves over a contiguous run of finished offsets, so a restart never skips one.
/// A new assignment of the same partition gets a new object: whatever finishes on a revoked one is never committed.
/// </summary>
internal sealed class PartitionProgress : IDisposable
{
    private readonly Lock _gate = new();
    private readonly Queue<Entry> _taken = new();
    private readonly CancellationTokenSource _abandon;
    private long _committable = Offset.Unset.Value;
    private int _running;
    private TaskCompletionSource? _idle;

    public PartitionProgress(TopicPartition partition, CancellationToken aborting)
    {
        Partition = partition;
        _abandon = CancellationTokenSource.CreateLinkedTokenSource(aborting);
    }

    public TopicPartition Partition { get; }

    /// <summary>Fires when the partition's work is abandoned (revocation timed out, partition lost) or the consumer aborts.</summary>
    public CancellationToken Abandoned => _abandon.Token;

    /// <summary>True once the partition was revoked or lost: nothing more of it starts, and nothing of it is committed by this object.</summary>
    public bool IsRevoked { get; private set; }

    /// <summary>The log end offset the client last saw (for the lag gauge), or null before the first fetch.</summary>
    public long? HighWatermark { get; set; }

    /// <summary>The log start offset the client last saw, or null.</summary>
    public long? LowWatermark { get; set; }

    /// <summary>The last offset committed for this assignment (Unset: none yet).</summary>
    public long Committed { get; private set; } = Offset.Unset.Value;

    /// <summary>Registers a message taken from the partition, in the order Kafka hands them out.</summary>
    public Entry Take(long offset)
    {
        var entry = new Entry(this, offset);
        lock (_gate)
        {
            _taken.Enqueue(entry);
        }

        return entry;
    }

    /// <summary>Marks the handler of <paramref name="entry"/> as running; false when the partition was revoked meanwhile (skip it).</summary>
    public bool TryStart(Entry entry)
    {
        lock (_gate)
        {
            if (IsRevoked)
            {
                return false;
            }

            entry.Started = true;
            _running++;
            return true;
        }
    }

    /// <summary>The handler of <paramref name="entry"/> returned; when it settled the message, its offset may be committed.</summary>
    public void Finish(Entry entry, bool settled)
    {
        lock (_gate)
        {
            if (entry.Started)
            {
                entry.Started = false;
                if (--_running == 0 && _idle is { } idle)
                {
                    _idle = null;
                    idle.TrySetResult();
                }
            }

            if (!settled || entry.Done)
            {
                return;
            }

            entry.Done = true;
            while (_taken.TryPeek(out var oldest) && oldest.Done)
            {
                _committable = _taken.Dequeue().Offset + 1;
            }
        }
    }

    /// <summary>The offset to commit now (the next one to read), or null when nothing moved since the last commit.</summary>
    public TopicPartitionOffset? ToCommit()
    {
        lock (_gate)
        {
            return _committable > Committed && !IsRevoked ? new TopicPartitionOffset(Partition, _committable) : null;
        }
    }

    /// <summary>Notes that <paramref name="offset"/> was committed.</summary>
    public void MarkCommitted(long offset)
    {
        lock (_gate)
        {
            Committed = Math.Max(Committed, offset);
        }
    }

    /// <summary>
    /// Stops the partition: nothing more starts; waits up to <paramref name="timeout"/> for running handlers, then
    /// abandons (cancels) them and waits a little more. Returns the offset to commit for what finished, or null.
    /// </summary>
    public TopicPartitionOffset? Revoke(TimeSpan timeout, bool commit)
    {
        Task idle;
        lock (_gate)
        {
            IsRevoked = true;
            if (_running == 0)
            {
                return commit ? CommittableLocked() : null;
            }

            idle = (_idle ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }

        // Still running handlers: finishing is the clean way out (their offsets then commit); past the timeout, or when
        // the partition is already lost to another member, they are abandoned and their messages handled again there.
        if (!commit || !idle.Wait(timeout))
        {
            _abandon.Cancel();
            idle.Wait(TimeSpan.FromSeconds(5));
        }

        lock (_gate)
        {
            return commit ? CommittableLocked() : null;
        }
    }

    private TopicPartitionOffset? CommittableLocked() =>
        _committable > Committed ? new TopicPartitionOffset(Partition, _committable) : null;

    public void Dispose() => _abandon.Dispose();

    /// <summary>One message taken from the partition.</summary>
    internal sealed class Entry(PartitionProgress partition, long offset)
    {
        public PartitionProgress Partition { get; } = partition;

        public long Offset { get; } = offset;

        public bool Started { get; set; }

        public bool Done { get; set; }
    }
}
