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

    // How long abandoned handlers have to see their cancellation and end before the partition moves on.
    private static readonly TimeSpan AbandonedWait = TimeSpan.FromSeconds(5);
    private readonly Lock _gate = new();
    private readonly CancellationTokenSource _abandon;
    private readonly CancellationToken _aborting;

    // The messages taken and not yet committable, oldest first: a ring of slots indexed by a running sequence number, so
    // taking a message allocates nothing. _head is the sequence of the oldest slot still held, _tail the next one given.
    private Slot[] _slots = new Slot[64];
    private long _head;
    private long _tail;
    private long _committable = Offset.Unset.Value;
    private int _outstanding;
    private TaskCompletionSource? _idle;

    public PartitionProgress(TopicPartition partition, CancellationToken aborting)
    {
        Partition = partition;
        Broker = new BrokerPartition(partition.Topic, partition.Partition.Value, Interlocked.Increment(ref s_assignments));
        _aborting = aborting;
        _abandon = CancellationTokenSource.CreateLinkedTokenSource(aborting);
    }

    public TopicPartition Partition { get; }

    /// <summary>The partition as this assignment of it is told to observers and to handlers (a new assignment, a new value).</summary>
    public BrokerPartition Broker { get; }

    /// <summary>Fires when the partition's work is abandoned (revocation timed out, partition lost) or the consumer aborts.</summary>
    public CancellationToken Abandoned => _abandon.Token;

    /// <summary>Whether <see cref="Abandoned"/> fired; safe after <see cref="Dispose"/> (a handler the stop abandoned settles late).</summary>
    public bool IsAbandoned => _abandon.IsCancellationRequested;

    /// <summary>True once the partition was revoked or lost: the poll loop commits nothing more of it through this object.</summary>
    public bool IsRevoked { get; private set; }

    /// <summary>The log end offset the client last saw (for the lag gauge), or null before the first fetch.</summary>
    public long? HighWatermark { get; set; }

    /// <summary>The log start offset the client last saw, or null.</summary>
    public long? LowWatermark { get; set; }

    /// <summary>
    /// Where this member started reading the partition, when that was resolved to an offset at assignment (the end for
    /// <c>Latest</c>, a time's offset for <c>Timestamp</c>); null when the client resumes from the group's offset or the start.
    /// </summary>
    public long? StartOffset { get; set; }

    /// <summary>
    /// How many messages taken from the partition were still unfinished when its revocation's wait ran out and abandoned
    /// them (0: the revocation did not time out, or the partition was lost or abandoned by the stop instead).
    /// </summary>
    public int UnfinishedAtTimeout { get; private set; }

    /// <summary>
    /// How many messages taken from the partition the commit cannot pass yet: the oldest not settled (running, or given up
    /// unsettled) and every one taken after it, settled or not.
    /// </summary>
    public long Held
    {
        get
        {
            lock (_gate)
            {
                return _tail - _head;
            }
        }
    }

    /// <summary>The last offset committed for this assignment (Unset: none yet).</summary>
    public long Committed { get; private set; } = Offset.Unset.Value;

    /// <summary>Registers a message taken from the partition, in the order Kafka hands them out.</summary>
    public Entry Take(long offset)
    {
        lock (_gate)
        {
            if (_tail - _head == _slots.Length)
            {
                Grow();
            }

            var sequence = _tail++;
            _slots[Index(sequence)] = new Slot(offset);
            _outstanding++;
            return new Entry(this, sequence);
        }
    }

    /// <summary>
    /// Whether the handler of a taken message may start: yes until the partition's work is abandoned. A revoked
    /// partition's taken messages still run (within the revocation timeout), so their offsets commit before it moves.
    /// </summary>
    public bool CanStart => !IsAbandoned;

    /// <summary>The message of <paramref name="entry"/> is done with; when it was settled, its offset may be committed.</summary>
    public void Finish(Entry entry, bool settled)
    {
        lock (_gate)
        {
            // Finished twice: the slot was marked (or already passed over) the first time.
            if (entry.Sequence < _head || entry.Sequence >= _tail)
            {
                return;
            }

            ref var slot = ref _slots[Index(entry.Sequence)];
            if (slot.State != SlotState.Running)
            {
                return;
            }

            slot.State = settled ? SlotState.Settled : SlotState.Unsettled;
            if (--_outstanding == 0 && _idle is { } idle)
            {
                _idle = null;
                idle.TrySetResult();
            }

            if (!settled)
            {
                return;
            }

            while (_head < _tail)
            {
                ref var oldest = ref _slots[Index(_head)];

                // An unsettled message ends the run for good: its offset must be read again by whoever comes next.
                if (oldest.State != SlotState.Settled)
                {
                    break;
                }

                _committable = oldest.Offset + 1;
                _head++;
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

    /// <summary>
    /// Makes <paramref name="offset"/>, where reading starts on a partition the group has no offset for, the first offset
    /// to commit: a partition read without a record settled would otherwise stay without one, and the next reader would
    /// start wherever the reset policy (or a binding's start at the end) says, past what was written meanwhile.
    /// </summary>
    public void CommitFrom(long offset)
    {
        lock (_gate)
        {
            _committable = Math.Max(_committable, offset);
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
    /// commit for what was settled, or null. A lost partition (<paramref name="commit"/> false) is abandoned at once. The
    /// consumer's stop aborting its handlers ends either wait: the stop gave them its own grace, and returns after it.
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
        // belongs to another member, the work is abandoned and its messages handled again there. Abandoned already (the
        // consumer's stop aborted its handlers, and gave up on those that ignore it), nothing is waited for.
        if (!IsAbandoned && (!commit || !Wait(idle, timeout, _abandon.Token)))
        {
            // Abandoned by the stop meanwhile (not by the timeout): nothing it settles from now on counts, and the stop
            // returns once its grace is over, so the poll thread must not sit here (up to the whole timeout) for them.
            var stopping = IsAbandoned;
            if (commit && !stopping)
            {
                lock (_gate)
                {
                    UnfinishedAtTimeout = _outstanding;
                }
            }

            _abandon.Cancel();
            if (!stopping)
            {
                Wait(idle, AbandonedWait, _aborting);
            }
        }

        lock (_gate)
        {
            return commit ? CommittableLocked() : null;
        }
    }

    public void Dispose() => _abandon.Dispose();

    /// <summary>Waits up to <paramref name="timeout"/> for <paramref name="idle"/>; false when it timed out or <paramref name="cancellationToken"/> fired.</summary>
    private static bool Wait(Task idle, TimeSpan timeout, CancellationToken cancellationToken)
    {
        try
        {
            return idle.Wait(timeout, cancellationToken);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private TopicPartitionOffset? CommittableLocked() =>
        _committable > Committed ? new TopicPartitionOffset(Partition, _committable) : null;

    private int Index(long sequence) => (int)(sequence & (_slots.Length - 1));

    private void Grow()
    {
        // Twice the room (still a power of two), the held slots moved over in order.
        var grown = new Slot[_slots.Length * 2];
        for (var sequence = _head; sequence < _tail; sequence++)
        {
            grown[(int)(sequence & (grown.Length - 1))] = _slots[Index(sequence)];
        }

        _slots = grown;
    }

    /// <summary>One message taken from the partition: which slot of its progress it holds.</summary>
    internal readonly record struct Entry(PartitionProgress Partition, long Sequence);

    private enum SlotState : byte
    {
        Running,
        Unsettled,
        Settled,
    }

    private struct Slot(long offset)
    {
        public readonly long Offset = offset;
        public SlotState State = SlotState.Running;
    }
}
