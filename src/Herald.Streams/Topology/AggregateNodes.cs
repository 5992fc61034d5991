namespace Herald.Streams.Topology;

/// <summary>A running aggregate per key (no window): the table keeps the latest aggregate and every change flows on.</summary>
internal sealed class AggregateNode<TKey, TValue, TAggregate>(string name, string store, Func<TAggregate> initializer, Func<TKey, TValue, TAggregate, TAggregate> aggregator)
    : Node(name)
{
    public override IEnumerable<StoreSpec> Stores => [new(store, StateCodec.For<TAggregate>(), Name)];

    public override void Process(in StreamRecord record, StreamTask task)
    {
        var key = (TKey)record.Key!;
        var state = task.Store(store);
        var stateKey = StateCodec.Key(key, Name);
        task.Current = this;
        var current = state.TryGet(stateKey, out var existing) ? (TAggregate)existing! : initializer();
        var next = aggregator(key, (TValue)record.Value!, current);
        state.Put(stateKey, next!);
        Forward(record with { Value = next }, task);
    }
}

/// <summary>Materializes a stream as a table: the latest value per key.</summary>
internal sealed class TableNode<TKey, TValue>(string name, string store) : Node(name)
{
    public override IEnumerable<StoreSpec> Stores => [new(store, StateCodec.For<TValue>(), Name)];

    public override void Process(in StreamRecord record, StreamTask task)
    {
        var stateKey = StateCodec.Key((TKey)record.Key!, Name);
        if (record.Value is null)
        {
            task.Store(store).Delete(stateKey);
        }
        else
        {
            task.Store(store).Put(stateKey, record.Value);
        }

        Forward(record, task);
    }
}

/// <summary>Joins each record of a stream with the current value of a table under the same key.</summary>
internal sealed class TableJoinNode<TKey, TValue, TTable, TResult>(string name, string tableStore, Func<TValue, TTable?, TResult> joiner, bool inner) : Node(name), ISharedStateNode
{
    // It reads the table, which lives in the partition of the key.
    public override bool RunsInPartition => true;

    public IEnumerable<string> ReadsStores => [tableStore];

    public override void Process(in StreamRecord record, StreamTask task)
    {
        var found = task.Store(tableStore).TryGet(StateCodec.Key((TKey)record.Key!, Name), out var value);
        if (!found && inner)
        {
            return;
        }

        task.Current = this;
        Forward(record with { Value = joiner((TValue)record.Value!, found ? (TTable)(value is IReduced reduced ? reduced.Value : value)! : default) }, task);
    }
}

/// <summary>
/// Joins each record with the value an outside table (<see cref="IStreamTableLookup{TKey, TValue}"/>) has for its key when
/// the record is processed. It keeps no state, so it runs wherever the record is (before or after the partitioner); the
/// read blocks the task while it runs. A failed read is no fault of the event: it stops the run, which resumes from the
/// last commit, instead of dead-lettering the event.
/// </summary>
internal sealed class LookupJoinNode<TKey, TValue, TTable, TResult>(string name, IStreamTableLookup<TKey, TTable> lookup, Func<TValue, TTable?, TResult> joiner, bool inner) : Node(name)
{
    public override void Process(in StreamRecord record, StreamTask task)
    {
        var services = task.Services ?? throw new InvalidOperationException($"'{Name}' reads an outside table and needs the application's services; run it in a stream processor.");
        TTable? value;
        try
        {
            var read = lookup.GetAsync((TKey)record.Key!, services, CancellationToken.None);
            value = read.IsCompletedSuccessfully ? read.Result : read.AsTask().GetAwaiter().GetResult();
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            throw new StreamLookupException($"'{Name}' could not read its table: {ex.Message}", ex);
        }

        if (value is null && inner)
        {
            return;
        }

        task.Current = this;
        Forward(record with { Value = joiner((TValue)record.Value!, value) }, task);
    }
}
