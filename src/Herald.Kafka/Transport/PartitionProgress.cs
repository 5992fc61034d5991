using Confluent.Kafka;
using Herald.Internal;

namespace Herald.Kafka.Transport;

/// <summary>
/// What one consumer has taken from one partition during one assignment, in offset order, and how far it may commit:
/// up to (not including) the oldest offset not yet settled. Messages of different keys finish out of order when they
/// run in parallel; the commit only moves over a contiguous run of settled offsets, so a restart never skips one.
/// A new assignment of the same partition gets a new object: whatever finishes on a revoked one is never committed
/// by the poll loop again.
/// </summary>
internal sealed class PartitionProgress : IDisposable
{
    private static long s_assignments;
    private readonly Lock _gate = new();
    private readonly Queue<Entry> _taken = new();
    private readonly CancellationTokenSource _abandon;
    private long _committable = Offset.Unset.Value;
    private int _outstanding;
    private TaskCompletionSource? _idle;

    public PartitionProgress(TopicPartition partition, CancellationToken aborting)
    {
        Partition = partition;
        Broker = new BrokerPartition(partition.Topic, partition.Partition.Value, Interlocked.Increment(ref s_assignments));
        _abandon = CancellationTokenSource.CreateLinkedTokenSource(aborting);
    }

    public TopicPartition Partition { get; }

    /// <summary>The partition as this assignment of it is told to observers and to handlers (a new assignment, a new value).</summary>
    public BrokerPartition Broker { get; }

    /// <summary>Fires when the partition's work is abandoned (revocation timed out, partition lost) or the consumer aborts.</summary>
    public CancellationToken Abandoned => _abandon.Token;

    /// <summary>True once the partition was revoked or lost: the poll loop commits nothing more of it through this object.</summary>
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
            _outstanding++;
        }

        return entry;
    }

    /// <summary>
    /// Whether the handler of a taken message may start: yes until the partition's work is abandoned. A revoked
    /// partition's taken messages still run (within the revocation timeout), so their offsets commit before it moves.
    /// </summary>
    public bool CanStart => !_abandon.IsCancellationRequested;

    /// <summary>The message of <paramref name="entry"/> is done with; when it was settled, its offset may be committed.</summary>
    public void Finish(Entry entry, bool settled)
    {
        lock (_gate)
        {
            if (entry.Finished)
            {
                return;
            }

            entry.Finished = true;
            if (--_outstanding == 0 && _idle is { } idle)
            {
                _idle = null;
                idle.TrySetResult();
            }

            if (!settled)
            {
                return;
            }

            entry.Settled = true;
            while (_taken.TryPeek(out var oldest) && oldest.Finished)
            {
                // An unsettled message ends the run for good: its offset must be read again by whoever comes next.
                if (!oldest.Settled)
                {
                    break;
                }

                _committable = _taken.Dequeue().Offset + 1;
            }
        }
    }

    /// <summary>The offset to commit now (the next one to read), or null when nothing moved since the last commit.</summary>
    public TopicPartitionOffset? ToCommit()
    {
        lock (_gate)
        {
            return IsRevoked ? null : CommittableLocked();
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
    /// Gives the partition up: waits up to <paramref name="timeout"/> for every message taken from it to finish (those
    /// not started yet still run), then abandons (cancels) what is left and waits a little more. Returns the offset to
    /// commit for what was settled, or null. A lost partition (<paramref name="commit"/> false) is abandoned at once.
    /// </summary>
    public TopicPartitionOffset? Revoke(TimeSpan timeout, bool commit)
    {
        Task idle;
        lock (_gate)
        {
            IsRevoked = true;
            if (_outstanding == 0)
            {
                return commit ? CommittableLocked() : null;
            }

            idle = (_idle ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }

        // Finishing is the clean way out (the offsets then commit); past the timeout, or when the partition already
        // belongs to another member, the work is abandoned and its messages handled again there.
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

    public void Dispose() => _abandon.Dispose();

    private TopicPartitionOffset? CommittableLocked() =>
        _committable > Committed ? new TopicPartitionOffset(Partition, _committable) : null;

    /// <summary>One message taken from the partition.</summary>
    internal sealed class Entry(PartitionProgress partition, long offset)
    {
        public PartitionProgress Partition { get; } = partition;

        public long Offset { get; } = offset;

        public bool Finished { get; set; }

        public bool Settled { get; set; }
    }
}
