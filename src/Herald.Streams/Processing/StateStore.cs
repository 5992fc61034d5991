namespace Herald.Streams.Topology;

/// <summary>
/// One task's copy of a state store: the values in memory, plus the keys changed since the last commit, which the
/// processor writes to the durable state store in the same unit of work as the source checkpoint.
/// </summary>
internal sealed class StateStore(StoreSpec spec)
{
    private readonly Dictionary<string, object> _entries = new(StringComparer.Ordinal);
    private readonly HashSet<string> _dirty = new(StringComparer.Ordinal);

    public StoreSpec Spec => spec;

    public int Count => _entries.Count;

    /// <summary>An operator's in-memory index over this store (rebuilt from the entries after a restart).</summary>
    public object? Attachment { get; set; }

    public IEnumerable<KeyValuePair<string, object>> Entries => _entries;

    public bool TryGet(string key, out object? value) => _entries.TryGetValue(key, out value);

    public void Put(string key, object value)
    {
        _entries[key] = value;
        _dirty.Add(key);
    }

    public void Delete(string key)
    {
        if (_entries.Remove(key))
        {
            _dirty.Add(key);
        }
    }

    /// <summary>Loads a value read from the durable store (not a change).</summary>
    public void Load(string key, string json) => _entries[key] = spec.Codec.Decode(json);

    /// <summary>The changes since the last call: each changed key with its JSON, or null when it was deleted.</summary>
    public List<StateChange> TakeChanges()
    {
        var changes = new List<StateChange>(_dirty.Count);
        foreach (var key in _dirty)
        {
            changes.Add(new StateChange(spec.Name, key, _entries.TryGetValue(key, out var value) ? spec.Codec.Encode(value) : null));
        }

        _dirty.Clear();
        return changes;
    }
}
