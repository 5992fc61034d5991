using Herald.Streams.Topology;

namespace Herald.Streams;

public sealed partial class StreamProcessor
{
    /// <summary>
    /// The current value of <paramref name="key"/> in the table kept in <paramref name="storeName"/> (interactive query), or
    /// default when it has none. Reads what this process has processed, including work not committed yet.
    /// </summary>
    /// <exception cref="KeyNotFoundException">The topology has no store of that name.</exception>
    public ValueTask<TValue?> QueryAsync<TKey, TValue>(string storeName, TKey key, CancellationToken cancellationToken = default)
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        CheckStore(storeName);
        foreach (var task in TasksOf(key, storeName))
        {
            lock (task.Gate)
            {
                // A key no state can hold (half of a surrogate pair) has no value, not that of the key its JSON writes.
                if (StateCodec.KeyOrNull(key) is { } stateKey && task.Store(storeName).TryGet(stateKey, out var value))
                {
                    return ValueTask.FromResult((TValue?)Unwrap(value));
                }
            }
        }

        return ValueTask.FromResult<TValue?>(default);
    }

    /// <summary>Every key of the table kept in <paramref name="storeName"/> with its current value, in key order.</summary>
    /// <exception cref="KeyNotFoundException">The topology has no store of that name.</exception>
    public ValueTask<IReadOnlyList<KeyValuePair<TKey, TValue>>> QueryAllAsync<TKey, TValue>(string storeName, CancellationToken cancellationToken = default)
        where TKey : notnull
    {
        cancellationToken.ThrowIfCancellationRequested();
        CheckStore(storeName);
        var entries = new List<KeyValuePair<string, object>>();
        foreach (var partition in FollowsBroker ? BrokerRuns().SelectMany(r => r.Run.Partitions.Values) : _run?.Partitions.Values ?? [])
        {
            var task = TaskOf(partition, storeName);
            lock (task.Gate)
            {
                entries.AddRange(task.Store(storeName).Entries);
            }
        }

        IReadOnlyList<KeyValuePair<TKey, TValue>> all = [.. entries
            .OrderBy(e => e.Key, StringComparer.Ordinal)
            .Select(e => KeyValuePair.Create(StateCodec.DecodeKey<TKey>(e.Key), (TValue)Unwrap(e.Value)!))];
        return ValueTask.FromResult(all);
    }

    /// <summary>
    /// The windows (or sessions) of <paramref name="key"/> in the windowed aggregate kept in <paramref name="storeName"/> that
    /// start in [<paramref name="from"/>, <paramref name="to"/>), open and retained closed ones alike, in start order.
    /// </summary>
    /// <exception cref="KeyNotFoundException">The topology has no store of that name.</exception>
    public ValueTask<IReadOnlyList<KeyValuePair<Windowed<TKey>, TValue>>> QueryWindowsAsync<TKey, TValue>(
        string storeName, TKey key, DateTimeOffset from, DateTimeOffset to, CancellationToken cancellationToken = default)
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(key);
        cancellationToken.ThrowIfCancellationRequested();
        CheckStore(storeName);
        var result = new List<KeyValuePair<Windowed<TKey>, TValue>>();
        if (StateCodec.KeyOrNull(key) is not { } keyJson)
        {
            return ValueTask.FromResult<IReadOnlyList<KeyValuePair<Windowed<TKey>, TValue>>>(result);
        }

        foreach (var task in TasksOf(key, storeName))
        {
            lock (task.Gate)
            {
                Collect(task);
            }
        }

        result.Sort((a, b) => a.Key.Window.Start.CompareTo(b.Key.Window.Start));
        return ValueTask.FromResult<IReadOnlyList<KeyValuePair<Windowed<TKey>, TValue>>>(result);

        void Collect(StreamTask task)
        {
            var store = task.Store(storeName);
            if (store.TryGet(keyJson, out var sessions) && sessions is Array array)
            {
                foreach (SessionSlotView session in array.Cast<IWindowSlot>().Select(SessionSlotView.Of))
                {
                    Add(session.Start, session.End, session.Value);
                }
            }
            else
            {
                foreach (var (stateKey, value) in store.Entries)
                {
                    if (value is IWindowSlot slot && stateKey.StartsWith(keyJson + "@", StringComparison.Ordinal))
                    {
                        Add(StateCodec.SplitWindowKey(stateKey).Start, slot.End, slot.Value);
                    }
                }
            }
        }

        void Add(long start, long end, object? value)
        {
            var window = EventTime.Window(start, end);
            if (window.Start >= from && window.Start < to)
            {
                result.Add(KeyValuePair.Create(new Windowed<TKey>(key, window), (TValue)Unwrap(value)!));
            }
        }
    }

    private static object? Unwrap(object? value) => value is IReduced reduced ? reduced.Value : value;

    private void CheckStore(string storeName)
    {
        if (storeName is null || storeName.StartsWith('$') || !_topology.StoreNames.Contains(storeName, StringComparer.Ordinal))
        {
            throw new KeyNotFoundException($"Stream processor '{Name}' has no state store named '{storeName}'; it has {string.Join(", ", _topology.StoreNames)}.");
        }
    }

    /// <summary>
    /// The task that keeps <paramref name="storeName"/> for the partition owning <paramref name="key"/>, or none when this
    /// process does not run it; with broker partitions, those of every broker partition held here (the broker's hash of a
    /// key is its own).
    /// </summary>
    private IEnumerable<StreamTask> TasksOf(object key, string storeName)
    {
        if (FollowsBroker)
        {
            return BrokerRuns().Select(r => TaskOf(r.Run.Partitions[0], storeName));
        }

        return _run is { } run && run.Partitions.TryGetValue(StreamPartitioner.PartitionOf(key, _options.Partitions), out var partition)
            ? [TaskOf(partition, storeName)]
            : [];
    }

    /// <summary>The partition's task of the sub-topology that keeps <paramref name="storeName"/>.</summary>
    private StreamTask TaskOf(StreamPartition partition, string storeName) =>
        _topology.StoreStages.TryGetValue(storeName, out var stage) && stage > 0 && partition.Stages.Count >= stage ? partition.Stages[stage - 1].Task : partition.Task;

    private readonly record struct SessionSlotView(long Start, long End, object? Value)
    {
        public static SessionSlotView Of(IWindowSlot slot) => slot is ISessionSlot session ? new(session.Start, slot.End, slot.Value) : new(slot.End, slot.End, slot.Value);
    }
}
