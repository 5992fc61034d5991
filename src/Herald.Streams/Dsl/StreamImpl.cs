using Herald.Streams.Topology;

namespace Herald.Streams;

/// <summary>A stream as the builder sees it: the node its records leave from.</summary>
internal sealed class StreamImpl<TKey, TValue>(StreamBuilder builder, Node node) : IStream<TKey, TValue>
    where TKey : notnull
{
    internal Node Node => node;

    internal StreamBuilder Builder => builder;

    public IStream<TKey, TResult> Map<TResult>(Func<TValue, TResult> mapper)
    {
        ArgumentNullException.ThrowIfNull(mapper);
        return Next<TKey, TResult>(new MapNode<TValue, TResult>(builder.NextName("map"), mapper));
    }

    public IStream<TKey, TResult> Map<TResult>(Func<TKey, TValue, TResult> mapper)
    {
        ArgumentNullException.ThrowIfNull(mapper);
        return Next<TKey, TResult>(new KeyedMapNode<TKey, TValue, TResult>(builder.NextName("map"), mapper));
    }

    public IStream<TKey, TValue> Filter(Func<TValue, bool> predicate)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        return Next<TKey, TValue>(new FilterNode<TValue>(builder.NextName("filter"), predicate));
    }

    public IStream<TKey, TResult> FlatMap<TResult>(Func<TValue, IEnumerable<TResult>> mapper)
    {
        ArgumentNullException.ThrowIfNull(mapper);
        return Next<TKey, TResult>(new FlatMapNode<TValue, TResult>(builder.NextName("flatmap"), mapper));
    }

    public IStream<TNewKey, TValue> SelectKey<TNewKey>(Func<TValue, TNewKey> keySelector)
        where TNewKey : notnull
    {
        ArgumentNullException.ThrowIfNull(keySelector);
        return Next<TNewKey, TValue>(new SelectKeyNode<TValue, TNewKey>(builder.NextName("selectkey"), keySelector));
    }

    public IGroupedStream<TKey, TValue> GroupByKey() => new GroupedImpl<TKey, TValue>(this);

    public IGroupedStream<TNewKey, TValue> GroupBy<TNewKey>(Func<TValue, TNewKey> keySelector)
        where TNewKey : notnull => SelectKey(keySelector).GroupByKey();

    public IStream<TKey, TValue> Merge(IStream<TKey, TValue> other)
    {
        var merge = builder.Add(new PassNode(builder.NextName("merge")), node, Of(other).Node);
        return new StreamImpl<TKey, TValue>(builder, merge);
    }

    public IReadOnlyList<IStream<TKey, TValue>> Branch(params Func<TValue, bool>[] predicates)
    {
        ArgumentNullException.ThrowIfNull(predicates);
        if (predicates.Length == 0 || predicates.Any(p => p is null))
        {
            throw new ArgumentException("Branch needs at least one predicate, and none may be null.", nameof(predicates));
        }

        var branch = builder.Add(new BranchNode<TValue>(builder.NextName("branch"), predicates), node);
        return [.. branch.Outputs.Select(o => new StreamImpl<TKey, TValue>(builder, o))];
    }

    public IStream<TKey, TValue> Peek(Action<TKey, TValue> action)
    {
        ArgumentNullException.ThrowIfNull(action);
        return Next<TKey, TValue>(new PeekNode<TKey, TValue>(builder.NextName("peek"), action));
    }

    public void To(IStreamSink<TKey, TValue> sink)
    {
        ArgumentNullException.ThrowIfNull(sink);
        builder.Add(new SinkNode(builder.NextName("sink"), new SinkWriter<TKey, TValue>(sink)), node);
    }

    public void To(string stream)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(stream);
        builder.Add(new NamedSinkNode(builder.NextName("to:" + stream), stream), node);
    }

    public ITable<TKey, TValue> ToTable(string storeName)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(storeName);
        var table = builder.Add(new TableNode<TKey, TValue>(builder.NextName("table"), storeName), node);
        return new TableImpl<TKey, TValue>(builder, table, storeName, windowed: false);
    }

    public IStream<TKey, TResult> Join<TOther, TResult>(IStream<TKey, TOther> other, Func<TValue, TOther, TResult> joiner, JoinWindows window)
    {
        ArgumentNullException.ThrowIfNull(joiner);
        return StreamJoin<TOther, TResult>(other, (l, r) => joiner(l!, r!), window, JoinKind.Inner);
    }

    public IStream<TKey, TResult> LeftJoin<TOther, TResult>(IStream<TKey, TOther> other, Func<TValue, TOther?, TResult> joiner, JoinWindows window)
    {
        ArgumentNullException.ThrowIfNull(joiner);
        return StreamJoin<TOther, TResult>(other, (l, r) => joiner(l!, r), window, JoinKind.Left);
    }

    public IStream<TKey, TResult> OuterJoin<TOther, TResult>(IStream<TKey, TOther> other, Func<TValue?, TOther?, TResult> joiner, JoinWindows window)
    {
        ArgumentNullException.ThrowIfNull(joiner);
        return StreamJoin(other, joiner, window, JoinKind.Outer);
    }

    public IStream<TKey, TResult> Join<TTable, TResult>(ITable<TKey, TTable> table, Func<TValue, TTable, TResult> joiner)
    {
        ArgumentNullException.ThrowIfNull(joiner);
        return TableJoin<TTable, TResult>(table, (v, t) => joiner(v, t!), inner: true);
    }

    public IStream<TKey, TResult> LeftJoin<TTable, TResult>(ITable<TKey, TTable> table, Func<TValue, TTable?, TResult> joiner)
    {
        ArgumentNullException.ThrowIfNull(joiner);
        return TableJoin(table, joiner, inner: false);
    }

    public IStream<TKey, TResult> Join<TTable, TResult>(IStreamTableLookup<TKey, TTable> table, Func<TValue, TTable, TResult> joiner)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(joiner);
        return Next<TKey, TResult>(new LookupJoinNode<TKey, TValue, TTable, TResult>(builder.NextName("lookup-join"), table, (v, t) => joiner(v, t!), inner: true));
    }

    public IStream<TKey, TResult> LeftJoin<TTable, TResult>(IStreamTableLookup<TKey, TTable> table, Func<TValue, TTable?, TResult> joiner)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(joiner);
        return Next<TKey, TResult>(new LookupJoinNode<TKey, TValue, TTable, TResult>(builder.NextName("lookup-left-join"), table, joiner, inner: false));
    }

    internal IStream<TNewKey, TNewValue> Next<TNewKey, TNewValue>(Node next)
        where TNewKey : notnull => new StreamImpl<TNewKey, TNewValue>(builder, builder.Add(next, node));

    private static StreamImpl<TKey, T> Of<T>(IStream<TKey, T> other) => other as StreamImpl<TKey, T>
        ?? throw new ArgumentException("The stream was not made by a StreamBuilder.", nameof(other));

    private IStream<TKey, TResult> StreamJoin<TOther, TResult>(IStream<TKey, TOther> other, Func<TValue?, TOther?, TResult> joiner, JoinWindows? window, JoinKind kind)
    {
        var right = Of(other);
        if (!ReferenceEquals(right.Builder, builder))
        {
            throw new ArgumentException("Both sides of a join must come from the same StreamBuilder.", nameof(other));
        }

        var join = new StreamJoinNode<TKey, TValue, TOther, TResult>(builder.NextName(kind.ToString().ToLowerInvariant() + "-join"), window, joiner, kind);
        builder.Add(join);
        builder.Add(join.Left, node);
        builder.Add(join.Right, right.Node);

        // Structural edges only (the sides hand records to the join directly): they order the join after both inputs.
        join.Left.AddChild(join);
        join.Right.AddChild(join);
        return new StreamImpl<TKey, TResult>(builder, join);
    }

    private IStream<TKey, TResult> TableJoin<TTable, TResult>(ITable<TKey, TTable> table, Func<TValue, TTable?, TResult> joiner, bool inner)
    {
        ArgumentNullException.ThrowIfNull(table);
        var impl = table as TableImpl<TKey, TTable> ?? throw new ArgumentException("The table was not made by a StreamBuilder.", nameof(table));
        var name = builder.NextName(inner ? "table-join" : "table-left-join");
        if (impl.Windowed)
        {
            builder.AddProblem($"'{name}': a stream-table join needs a table kept per key; '{impl.StoreName}' is windowed.");
        }

        return Next<TKey, TResult>(new TableJoinNode<TKey, TValue, TTable, TResult>(name, impl.StoreName, joiner, inner));
    }
}

/// <summary>A table as the builder sees it: the node its changes leave from and its store.</summary>
internal sealed class TableImpl<TKey, TValue>(StreamBuilder builder, Node node, string storeName, bool windowed) : ITable<TKey, TValue>
    where TKey : notnull
{
    public string StoreName => storeName;

    public bool Windowed => windowed;

    public IStream<TKey, TValue> ToStream() => new StreamImpl<TKey, TValue>(builder, node);
}

internal sealed class GroupedImpl<TKey, TValue>(StreamImpl<TKey, TValue> stream) : IGroupedStream<TKey, TValue>
    where TKey : notnull
{
    public ITable<TKey, long> Count(string storeName) => Aggregate(static () => 0L, static (_, _, count) => count + 1, storeName);

    public ITable<TKey, TValue> Reduce(Func<TValue, TValue, TValue> reducer, string storeName)
    {
        ArgumentNullException.ThrowIfNull(reducer);
        return Project(Aggregate<Reduced<TValue>>(static () => default, (_, value, acc) => acc.HasValue ? new(reducer(acc.Value, value), true) : new(value, true), storeName), storeName);
    }

    public ITable<TKey, TAggregate> Aggregate<TAggregate>(Func<TAggregate> initializer, Func<TKey, TValue, TAggregate, TAggregate> aggregator, string storeName)
    {
        ArgumentNullException.ThrowIfNull(initializer);
        ArgumentNullException.ThrowIfNull(aggregator);
        ArgumentException.ThrowIfNullOrWhiteSpace(storeName);
        var builder = stream.Builder;
        var node = builder.Add(new AggregateNode<TKey, TValue, TAggregate>(builder.NextName("aggregate"), storeName, initializer, aggregator), stream.Node);
        return new TableImpl<TKey, TAggregate>(builder, node, storeName, windowed: false);
    }

    public IWindowedStream<TKey, TValue> WindowedBy(WindowDefinition windows) => new WindowedImpl<TKey, TValue>(stream, windows, Suppress: false, Late: null, Retention: TimeSpan.FromHours(1));

    private ITable<TKey, TValue> Project(ITable<TKey, Reduced<TValue>> table, string storeName)
    {
        var impl = (TableImpl<TKey, Reduced<TValue>>)table;
        var values = ((StreamImpl<TKey, Reduced<TValue>>)impl.ToStream()).Next<TKey, TValue>(new MapNode<Reduced<TValue>, TValue>(stream.Builder.NextName("map"), r => r.Value));
        return new TableImpl<TKey, TValue>(stream.Builder, ((StreamImpl<TKey, TValue>)values).Node, storeName, windowed: false);
    }
}

/// <summary>A reduce's running value, with whether a first value has arrived (a reduce has no initial value).</summary>
internal readonly record struct Reduced<T>(T Value, bool HasValue) : IReduced
{
    object? IReduced.Value => Value;
}

/// <summary>What queries and table joins see through: a reduce keeps its value wrapped.</summary>
internal interface IReduced
{
    object? Value { get; }
}

internal sealed record WindowedImpl<TKey, TValue>(StreamImpl<TKey, TValue> Stream, WindowDefinition? Windows, bool Suppress, Action<IStream<TKey, TValue>>? Late, TimeSpan Retention)
    : IWindowedStream<TKey, TValue>
    where TKey : notnull
{
    public IWindowedStream<TKey, TValue> SuppressUntilWindowCloses() => this with { Suppress = true };

    public IWindowedStream<TKey, TValue> WithLateOutput(Action<IStream<TKey, TValue>> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        return this with { Late = configure };
    }

    public IWindowedStream<TKey, TValue> RetainClosedWindowsFor(TimeSpan retention) => this with { Retention = retention };

    public ITable<Windowed<TKey>, long> Count(string storeName) =>
        Aggregate(static () => 0L, static (_, _, count) => count + 1, storeName, static (_, a, b) => a + b);

    public ITable<Windowed<TKey>, TValue> Reduce(Func<TValue, TValue, TValue> reducer, string storeName)
    {
        ArgumentNullException.ThrowIfNull(reducer);
        var table = (TableImpl<Windowed<TKey>, Reduced<TValue>>)Aggregate<Reduced<TValue>>(
            static () => default,
            (_, value, acc) => acc.HasValue ? new(reducer(acc.Value, value), true) : new(value, true),
            storeName,
            (_, a, b) => !a.HasValue ? b : !b.HasValue ? a : new(reducer(a.Value, b.Value), true));
        var values = ((StreamImpl<Windowed<TKey>, Reduced<TValue>>)table.ToStream()).Next<Windowed<TKey>, TValue>(
            new MapNode<Reduced<TValue>, TValue>(Stream.Builder.NextName("map"), r => r.Value));
        return new TableImpl<Windowed<TKey>, TValue>(Stream.Builder, ((StreamImpl<Windowed<TKey>, TValue>)values).Node, storeName, windowed: true);
    }

    public ITable<Windowed<TKey>, TAggregate> Aggregate<TAggregate>(
        Func<TAggregate> initializer,
        Func<TKey, TValue, TAggregate, TAggregate> aggregator,
        string storeName,
        Func<TKey, TAggregate, TAggregate, TAggregate>? merger = null)
    {
        ArgumentNullException.ThrowIfNull(initializer);
        ArgumentNullException.ThrowIfNull(aggregator);
        ArgumentException.ThrowIfNullOrWhiteSpace(storeName);
        var builder = Stream.Builder;
        WindowedNode node;
        if (Windows is SessionWindows sessions)
        {
            var name = builder.NextName("session-aggregate");
            if (merger is null)
            {
                builder.AddProblem($"'{name}': an aggregate over session windows needs a merger (sessions that an event bridges are combined).");
            }

            node = new SessionAggregateNode<TKey, TValue, TAggregate>(name, storeName, sessions, initializer, aggregator, merger ?? ((_, a, _) => a), Suppress, Retention.Ticks);
        }
        else
        {
            node = new TimeWindowAggregateNode<TKey, TValue, TAggregate>(builder.NextName("window-aggregate"), storeName, Windows, initializer, aggregator, Suppress, Retention.Ticks);
        }

        builder.Add(node, Stream.Node);
        if (Late is not null)
        {
            var late = builder.Add(new PassNode(node.Name + "/late"));
            node.LateOutput = late;
            Late(new StreamImpl<TKey, TValue>(builder, late));
        }

        return new TableImpl<Windowed<TKey>, TAggregate>(builder, node, storeName, windowed: true);
    }
}
