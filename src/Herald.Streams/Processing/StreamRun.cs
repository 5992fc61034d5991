using Herald.EventSourcing.Subscriptions;
using Herald.Streams.Topology;

namespace Herald.Streams;

/// <summary>
/// One run of a processor over the partitions it owns: the router task (it reads the source and runs the stateless
/// operators), the partition tasks, and the subscription feeding them. A change of ownership or a failure ends the run;
/// the next one loads the committed state again.
/// </summary>
internal sealed class StreamRun : IRecordRouter
{
    private Exception? _failure;

    public StreamRun(StreamTopology topology, TimeSpan allowedOutOfOrderness, IServiceProvider services, int partitionCount, IEnumerable<StreamPartition> partitions)
    {
        PartitionCount = partitionCount;
        Partitions = partitions.ToDictionary(p => p.Index);
        Router = new StreamTask(topology, allowedOutOfOrderness) { Router = this, Services = services };
    }

    /// <summary>The partitions of the whole stream (this run owns <see cref="Partitions"/> of them).</summary>
    public int PartitionCount { get; }

    public IReadOnlyDictionary<int, StreamPartition> Partitions { get; }

    public StreamTask Router { get; }

    /// <summary>The records the router sent while it handled the current event; guarded by the router's gate.</summary>
    public List<(int Partition, Node Node, StreamRecord Record)> Routed { get; } = [];

    public EventSubscription? Subscription { get; set; }

    /// <summary>Set when the run is being stopped: its partitions are no longer this process's to answer for.</summary>
    public bool Stopped { get; set; }

    /// <summary>Set once the run failed (a commit, a partition loop); nothing is committed after it.</summary>
    public Exception? Failure => Volatile.Read(ref _failure);

    /// <summary>Completes when the run fails.</summary>
    public TaskCompletionSource Failed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Where the source resumes: the lowest checkpoint of the owned partitions.</summary>
    public long StartPosition => Partitions.Count == 0 ? 0 : Partitions.Values.Min(p => p.Checkpoint);

    /// <summary>The position up to which every owned partition (and each of its later sub-topologies) has committed.</summary>
    public long CommittedPosition => Partitions.Count == 0 ? 0 : Partitions.Values.Min(p => p.Stages.Aggregate(p.Committed, (min, s) => Math.Min(min, s.Committed)));

    void IRecordRouter.Route(Node node, in StreamRecord record) =>
        Routed.Add((StreamPartitioner.PartitionOf(record.Key, PartitionCount), node, record));

    /// <summary>Marks the run failed (the first error wins) and closes every partition queue so writers stop at once.</summary>
    public bool Fail(Exception error)
    {
        if (Interlocked.CompareExchange(ref _failure, error, null) is not null)
        {
            return false;
        }

        foreach (var partition in Partitions.Values)
        {
            partition.Complete(error);
        }

        Failed.TrySetResult();
        return true;
    }
}
