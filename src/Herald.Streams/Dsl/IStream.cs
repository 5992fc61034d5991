namespace Herald.Streams;

/// <summary>
/// A typed stream of keyed records in event time, built with a <see cref="StreamBuilder"/>. Every operator returns a new
/// stream; nothing runs until the built topology runs in a stream processor.
/// </summary>
/// <typeparam name="TKey">The records' key.</typeparam>
/// <typeparam name="TValue">The records' value.</typeparam>
public interface IStream<TKey, TValue>
    where TKey : notnull
{
    /// <summary>Transforms each value; the key and event time stay.</summary>
    IStream<TKey, TResult> Map<TResult>(Func<TValue, TResult> mapper);

    /// <summary>Transforms each value, seeing its key (a window's key and bounds, after a windowed aggregate).</summary>
    IStream<TKey, TResult> Map<TResult>(Func<TKey, TValue, TResult> mapper);

    /// <summary>Keeps the records whose value passes <paramref name="predicate"/>.</summary>
    IStream<TKey, TValue> Filter(Func<TValue, bool> predicate);

    /// <summary>Turns each value into zero or more values with the same key and event time.</summary>
    IStream<TKey, TResult> FlatMap<TResult>(Func<TValue, IEnumerable<TResult>> mapper);

    /// <summary>Re-keys each record; a null key sends the input event to the dead letters as unkeyable.</summary>
    IStream<TNewKey, TValue> SelectKey<TNewKey>(Func<TValue, TNewKey> keySelector)
        where TNewKey : notnull;

    /// <summary>Groups by the current key, for aggregation.</summary>
    IGroupedStream<TKey, TValue> GroupByKey();

    /// <summary>Re-keys and groups, for aggregation (<see cref="SelectKey"/> then <see cref="GroupByKey"/>).</summary>
    IGroupedStream<TNewKey, TValue> GroupBy<TNewKey>(Func<TValue, TNewKey> keySelector)
        where TNewKey : notnull;

    /// <summary>The records of this stream and of <paramref name="other"/>, interleaved as they come.</summary>
    IStream<TKey, TValue> Merge(IStream<TKey, TValue> other);

    /// <summary>Splits the stream: each record goes to the first branch whose predicate it passes, or to none.</summary>
    IReadOnlyList<IStream<TKey, TValue>> Branch(params Func<TValue, bool>[] predicates);

    /// <summary>Calls <paramref name="action"/> with each record and passes it on unchanged.</summary>
    IStream<TKey, TValue> Peek(Action<TKey, TValue> action);

    /// <summary>Writes the records to <paramref name="sink"/> at each commit.</summary>
    void To(IStreamSink<TKey, TValue> sink);

    /// <summary>Writes the records to the named in-topology stream that <see cref="StreamBuilder.Stream{TKey, TValue}(string)"/> reads.</summary>
    void To(string stream);

    /// <summary>Materializes the stream as a table of the latest value per key, kept in the state store <paramref name="storeName"/>.</summary>
    ITable<TKey, TValue> ToTable(string storeName);

    /// <summary>Inner windowed join: a record meets every record of <paramref name="other"/> with the same key at most the window apart.</summary>
    IStream<TKey, TResult> Join<TOther, TResult>(IStream<TKey, TOther> other, Func<TValue, TOther, TResult> joiner, JoinWindows window);

    /// <summary>Left windowed join: as <see cref="Join{TOther, TResult}(IStream{TKey, TOther}, Func{TValue, TOther, TResult}, JoinWindows)"/>, and a record of this stream that met none is emitted with a default partner when its window closes.</summary>
    IStream<TKey, TResult> LeftJoin<TOther, TResult>(IStream<TKey, TOther> other, Func<TValue, TOther?, TResult> joiner, JoinWindows window);

    /// <summary>Outer windowed join: unmatched records of either side are emitted with a default partner when their window closes.</summary>
    IStream<TKey, TResult> OuterJoin<TOther, TResult>(IStream<TKey, TOther> other, Func<TValue?, TOther?, TResult> joiner, JoinWindows window);

    /// <summary>Joins each record with the table's current value under its key; records without one are dropped.</summary>
    IStream<TKey, TResult> Join<TTable, TResult>(ITable<TKey, TTable> table, Func<TValue, TTable, TResult> joiner);

    /// <summary>Joins each record with the table's current value under its key, or a default when it has none.</summary>
    IStream<TKey, TResult> LeftJoin<TTable, TResult>(ITable<TKey, TTable> table, Func<TValue, TTable?, TResult> joiner);

    /// <summary>Joins each record with an outside table's value under its key (a projection's read model, <see cref="StreamTables.ReadModel"/>), read when the record is processed; records without one are dropped.</summary>
    IStream<TKey, TResult> Join<TTable, TResult>(IStreamTableLookup<TKey, TTable> table, Func<TValue, TTable, TResult> joiner);

    /// <summary>Joins each record with an outside table's value under its key, read when the record is processed, or a default when it has none.</summary>
    IStream<TKey, TResult> LeftJoin<TTable, TResult>(IStreamTableLookup<TKey, TTable> table, Func<TValue, TTable?, TResult> joiner);
}

/// <summary>A stream grouped by key, ready to aggregate per key or per window.</summary>
/// <typeparam name="TKey">The grouping key.</typeparam>
/// <typeparam name="TValue">The records' value.</typeparam>
public interface IGroupedStream<TKey, TValue>
    where TKey : notnull
{
    /// <summary>Counts the records per key into the state store <paramref name="storeName"/>.</summary>
    ITable<TKey, long> Count(string storeName);

    /// <summary>Combines the values per key with <paramref name="reducer"/> (the first value starts it).</summary>
    ITable<TKey, TValue> Reduce(Func<TValue, TValue, TValue> reducer, string storeName);

    /// <summary>Folds the values per key into an aggregate that starts as <paramref name="initializer"/> returns.</summary>
    ITable<TKey, TAggregate> Aggregate<TAggregate>(Func<TAggregate> initializer, Func<TKey, TValue, TAggregate, TAggregate> aggregator, string storeName);

    /// <summary>Cuts each key's records into event-time windows.</summary>
    IWindowedStream<TKey, TValue> WindowedBy(WindowDefinition windows);
}

/// <summary>
/// A grouped stream cut into windows. By default a windowed aggregate emits on every update; after
/// <see cref="SuppressUntilWindowCloses"/> it emits each window once, when the watermark passes its end + grace.
/// </summary>
/// <typeparam name="TKey">The grouping key.</typeparam>
/// <typeparam name="TValue">The records' value.</typeparam>
public interface IWindowedStream<TKey, TValue>
    where TKey : notnull
{
    /// <summary>Emits each window's final result once, when it closes, instead of every update.</summary>
    IWindowedStream<TKey, TValue> SuppressUntilWindowCloses();

    /// <summary>Routes late records (their window had closed) into a stream that <paramref name="configure"/> sends on (a sink, a peek).</summary>
    IWindowedStream<TKey, TValue> WithLateOutput(Action<IStream<TKey, TValue>> configure);

    /// <summary>Keeps closed windows queryable for <paramref name="retention"/> of watermark time (one hour by default; zero drops them at close).</summary>
    IWindowedStream<TKey, TValue> RetainClosedWindowsFor(TimeSpan retention);

    /// <summary>Counts the records per key and window.</summary>
    ITable<Windowed<TKey>, long> Count(string storeName);

    /// <summary>Combines the values per key and window with <paramref name="reducer"/>.</summary>
    ITable<Windowed<TKey>, TValue> Reduce(Func<TValue, TValue, TValue> reducer, string storeName);

    /// <summary>
    /// Folds the values per key and window. Session windows also need <paramref name="merger"/>, which combines the
    /// aggregates of two sessions an event bridges.
    /// </summary>
    ITable<Windowed<TKey>, TAggregate> Aggregate<TAggregate>(
        Func<TAggregate> initializer,
        Func<TKey, TValue, TAggregate, TAggregate> aggregator,
        string storeName,
        Func<TKey, TAggregate, TAggregate, TAggregate>? merger = null);
}

/// <summary>A table: the latest value per key, kept in a named state store that queries and stream-table joins read.</summary>
/// <typeparam name="TKey">The key.</typeparam>
/// <typeparam name="TValue">The value.</typeparam>
public interface ITable<TKey, TValue>
    where TKey : notnull
{
    /// <summary>The state store that holds it (what the processor's queries takes).</summary>
    string StoreName { get; }

    /// <summary>The stream of its changes: each update of a key, as it happens (or, suppressed, as each window closes).</summary>
    IStream<TKey, TValue> ToStream();
}
