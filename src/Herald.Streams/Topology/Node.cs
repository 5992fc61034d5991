namespace Herald.Streams.Topology;

/// <summary>A record flowing through a task: its key, its value and its event time (UTC ticks).</summary>
internal readonly record struct StreamRecord(object? Key, object? Value, long Time);

/// <summary>
/// One operator of a built topology. Nodes hold no state of their own (state lives in the task's stores), so one built
/// topology serves every task at once.
/// </summary>
internal abstract class Node(string name)
{
    private Node[] _children = [];

    /// <summary>The operator's name in errors and metrics (<c>kind-index</c>).</summary>
    public string Name { get; } = name;

    /// <summary>Where records go next; set while building, frozen once the builder has built.</summary>
    public IReadOnlyList<Node> Children => _children;

    /// <summary>The state stores this operator owns.</summary>
    public virtual IEnumerable<StoreSpec> Stores => [];

    /// <summary>True for operators that act when the watermark moves (closing windows, ending joins).</summary>
    public virtual bool IsTimed => false;

    /// <summary>
    /// True for operators that must run in the task owning the record's key: those with state, timers or outputs to
    /// commit. Records reach them through the partitioner; the operators before them run where the source is read.
    /// </summary>
    public virtual bool RunsInPartition => IsTimed || Stores.Any();

    /// <summary>Set when the topology is built: this operator runs in a partition task (it or an operator before it has state).</summary>
    public bool IsPartitioned { get; internal set; }

    /// <summary>
    /// Set when the topology is built: the sub-topology this operator runs in. A re-key after state that feeds state again
    /// starts the next one; with several partitions records reach it through the processor's repartition log.
    /// </summary>
    public int Stage { get; internal set; }

    public void AddChild(Node child) => _children = [.. _children, child];

    /// <summary>What is wrong with this operator's definition, if anything (checked at build).</summary>
    public virtual string? Problem() => null;

    public abstract void Process(in StreamRecord record, StreamTask task);

    /// <summary>Called once per input record after the watermark advanced, in topological order.</summary>
    public virtual void OnWatermark(StreamTask task)
    {
    }

    protected void Forward(in StreamRecord record, StreamTask task)
    {
        var children = _children;
        var router = task.Router;
        for (var i = 0; i < children.Length; i++)
        {
            if (router is not null && children[i].IsPartitioned)
            {
                // Leaving the stateless part: the record continues in the task of its key's partition (after any re-key).
                router.Route(children[i], record);
            }
            else if (task.Crossings is not null && children[i].Stage > task.Stage)
            {
                // Leaving this sub-topology: the record goes to the repartition log, to the partition of its new key.
                task.Cross(children[i], record);
            }
            else
            {
                children[i].Process(record, task);
            }
        }
    }
}

/// <summary>Where the task that runs a topology's stateless part sends records bound for a partition task.</summary>
internal interface IRecordRouter
{
    void Route(Node node, in StreamRecord record);
}

/// <summary>An operator that reads state another operator keeps (a join side, a table join): both run in one sub-topology.</summary>
internal interface ISharedStateNode
{
    IEnumerable<string> ReadsStores { get; }
}

/// <summary>A state store an operator owns: its name and how its values are written to the durable store.</summary>
internal sealed record StoreSpec(string Name, StateCodec Codec, string Operator);
