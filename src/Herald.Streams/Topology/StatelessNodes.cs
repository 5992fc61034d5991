namespace Herald.Streams.Topology;

/// <summary>Where a topology's records come from: messages of one type from the processor's source.</summary>
internal sealed class SourceNode<TValue>(string name, Func<TValue, DateTimeOffset>? eventTime) : Node(name)
{
    public override void Process(in StreamRecord record, StreamTask task)
    {
        var time = record.Time;
        if (eventTime is not null)
        {
            task.Current = this;
            time = eventTime((TValue)record.Value!).UtcTicks;
        }

        task.Observe(time);
        Forward(record with { Time = time }, task);
    }
}

/// <summary>Hands records on unchanged: merges, branch outputs, named streams, side outputs.</summary>
internal sealed class PassNode(string name) : Node(name)
{
    public override void Process(in StreamRecord record, StreamTask task) => Forward(record, task);
}

internal sealed class MapNode<TValue, TResult>(string name, Func<TValue, TResult> map) : Node(name)
{
    public override void Process(in StreamRecord record, StreamTask task)
    {
        task.Current = this;
        Forward(record with { Value = map((TValue)record.Value!) }, task);
    }
}

internal sealed class KeyedMapNode<TKey, TValue, TResult>(string name, Func<TKey, TValue, TResult> map) : Node(name)
{
    public override void Process(in StreamRecord record, StreamTask task)
    {
        task.Current = this;
        Forward(record with { Value = map((TKey)record.Key!, (TValue)record.Value!) }, task);
    }
}

internal sealed class FilterNode<TValue>(string name, Func<TValue, bool> predicate) : Node(name)
{
    public override void Process(in StreamRecord record, StreamTask task)
    {
        task.Current = this;
        if (predicate((TValue)record.Value!))
        {
            Forward(record, task);
        }
    }
}

internal sealed class FlatMapNode<TValue, TResult>(string name, Func<TValue, IEnumerable<TResult>> map) : Node(name)
{
    public override void Process(in StreamRecord record, StreamTask task)
    {
        task.Current = this;
        foreach (var value in map((TValue)record.Value!))
        {
            Forward(record with { Value = value }, task);
        }
    }
}

/// <summary>Re-keys records; a null key means the record cannot be keyed, which the processor dead-letters.</summary>
internal sealed class SelectKeyNode<TValue, TKey>(string name, Func<TValue, TKey> selector) : Node(name), IRekeyNode
{
    public override void Process(in StreamRecord record, StreamTask task)
    {
        task.Current = this;
        var key = selector((TValue)record.Value!);
        if (key is null)
        {
            throw new StreamKeyException($"The key selector of '{Name}' returned null for a {record.Value?.GetType().Name}; the record cannot be keyed.", Name);
        }

        Forward(record with { Key = key }, task);
    }
}

internal sealed class PeekNode<TKey, TValue>(string name, Action<TKey, TValue> action) : Node(name)
{
    public override void Process(in StreamRecord record, StreamTask task)
    {
        task.Current = this;
        action((TKey)record.Key!, (TValue)record.Value!);
        Forward(record, task);
    }
}

/// <summary>Sends each record to the first branch whose predicate it passes (or nowhere when it passes none).</summary>
internal sealed class BranchNode<TValue>(string name, Func<TValue, bool>[] predicates) : Node(name), IBranchNode
{
    IEnumerable<Node> IBranchNode.Outputs => Outputs;

    public PassNode[] Outputs { get; } = [.. predicates.Select((_, i) => new PassNode($"{name}/{i}"))];

    public override void Process(in StreamRecord record, StreamTask task)
    {
        task.Current = this;
        var value = (TValue)record.Value!;
        for (var i = 0; i < predicates.Length; i++)
        {
            if (predicates[i](value))
            {
                Outputs[i].Process(record, task);
                return;
            }
        }
    }
}

/// <summary>Collects records for a sink; the processor writes them at the next commit, in its unit of work.</summary>
internal sealed class SinkNode(string name, IStreamSinkWriter writer) : Node(name)
{
    public IStreamSinkWriter Writer => writer;

    // Its outputs commit with the state and checkpoint of one partition.
    public override bool RunsInPartition => true;

    public override void Process(in StreamRecord record, StreamTask task) => task.Emit(this, record);
}

/// <summary>Writes named-stream records straight on to the readers of that name (an edge the cycle check follows).</summary>
internal sealed class NamedSinkNode(string name, string stream) : Node(name)
{
    public string Stream => stream;

    public override void Process(in StreamRecord record, StreamTask task) => Forward(record, task);
}

/// <summary>An operator that changes records' keys, and so may move them to another partition.</summary>
internal interface IRekeyNode
{
}

/// <summary>An operator with outputs beside its children (a branch), which the topology check walks too.</summary>
internal interface IBranchNode
{
    IEnumerable<Node> Outputs { get; }
}
