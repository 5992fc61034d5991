using System.Threading.Channels;
using Herald.EventSourcing;
using Herald.Reliability.DeadLetters;
using Herald.Streams.Topology;

namespace Herald.Streams;

/// <summary>
/// One partition of a processor: the task that owns the keys hashing to it, its state name and checkpoint, and the bounded
/// queue the router fills (records, dead letters, commit barriers) in source order. One loop drains the queue; queries
/// lock <see cref="StreamTask.Gate"/>.
/// </summary>
internal sealed class StreamPartition
{
    // Bounded: a slow partition slows the reader of the source instead of filling memory.
    private readonly Channel<PartitionWork> _work = Channel.CreateBounded<PartitionWork>(
        new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true, SingleWriter = true });

    private long _committed;

    public StreamPartition(int index, string stateName, string checkpointId, StreamTask task, long checkpoint)
    {
        Index = index;
        StateName = stateName;
        CheckpointId = checkpointId;
        Task = task;
        Checkpoint = checkpoint;
        _committed = checkpoint;
    }

    public int Index { get; }

    /// <summary>The name its state is kept under in the <see cref="IStreamStateStore"/>.</summary>
    public string StateName { get; }

    /// <summary>Its checkpoint in the <see cref="ICheckpointStore"/>.</summary>
    public string CheckpointId { get; }

    public StreamTask Task { get; }

    /// <summary>The checkpoint it was loaded at: events at or below it are in its state already, and the router skips them for it.</summary>
    public long Checkpoint { get; }

    /// <summary>Everything routed to it up to this position is committed (or had nothing to commit).</summary>
    public long Committed => Volatile.Read(ref _committed);

    /// <summary>Dead letters waiting for its next commit; guarded by the task's gate.</summary>
    public List<DeadLetter> DeadLetters { get; } = [];

    public Task Loop { get; set; } = System.Threading.Tasks.Task.CompletedTask;

    /// <summary>Its tasks of the later sub-topologies (stage 1 first), when the topology is split into several.</summary>
    public List<StreamStage> Stages { get; } = [];

    /// <summary>Writes the records leaving its sub-topology to the repartition logs of stage 1.</summary>
    public RepartitionWriter Writer { get; } = new();

    /// <summary>The leadership this process holds on the partition (none when no election is used).</summary>
    public Herald.Persistence.LeaderLease? Lease { get; init; }

    public ChannelReader<PartitionWork> Reader => _work.Reader;

    public void MarkCommitted(long position)
    {
        if (position > Volatile.Read(ref _committed))
        {
            Volatile.Write(ref _committed, position);
        }
    }

    // Never cancelled: a record half routed (some partitions have it, others not) must reach them all before a barrier.
    public ValueTask EnqueueAsync(PartitionWork work) => _work.Writer.WriteAsync(work, CancellationToken.None);

    /// <summary>No more work: the loop drains what is queued and ends (or, with an error, writers fail at once).</summary>
    public void Complete(Exception? error = null) => _work.Writer.TryComplete(error);
}

/// <summary>
/// One item of a partition's queue: a record to run from <see cref="Node"/> on, a dead letter to store with the next commit,
/// or (no node, no dead letter) a commit barrier at <see cref="CommitAt"/>. <see cref="StreamTime"/> is the router's then.
/// </summary>
internal readonly record struct PartitionWork(Node? Node, StreamRecord Record, long StreamTime, RecordedEvent? Source, long CommitAt, DeadLetter? DeadLetter);
