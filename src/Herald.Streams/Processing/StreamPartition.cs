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
internal sealed class StreamPartition(int index, string stateName, string checkpointId, StreamTask task, long checkpoint)
    : StreamUnit(stateName, checkpointId, task, checkpoint)
{
    // Bounded: a slow partition slows the reader of the source instead of filling memory.
    private readonly Channel<PartitionWork> _work = Channel.CreateBounded<PartitionWork>(
        new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true, SingleWriter = true });

    public int Index { get; } = index;

    /// <summary>The checkpoint it was loaded at: events at or below it are in its state already, and the router skips them for it.</summary>
    public long Checkpoint { get; } = checkpoint;

    /// <summary>Its tasks of the later sub-topologies (stage 1 first), when the topology is split into several.</summary>
    public List<StreamStage> Stages { get; } = [];

    /// <summary>The leadership this process holds on the partition (none when no election is used).</summary>
    public Herald.Persistence.LeaderLease? Lease { get; init; }

    public ChannelReader<PartitionWork> Reader => _work.Reader;

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
