using System.Diagnostics.CodeAnalysis;

namespace Herald.Streams.Topology;

/// <summary>
/// One task's copy of a state store: the values in memory, plus the keys changed since the last commit, which the
/// processor writes to the durable state store in the same unit of work as the source checkpoint.
/// </summary>
internal sealed class StateStore(StoreSpec spec)
{
    private readonly Dictionary<string, object> _entries = new(StringComparer.Ordinal);
    private readonly HashSet<string> _dirty = new(StringComparer.Ordinal);
    private PriorityQueue<string, long>? _due;

    public StoreSpec Spec => spec;

    public int Count => _entries.Count;

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

    /// <summary>
    /// The operator's in-memory index of when each key is next due (a window closes, a buffered record expires), kept with
    /// this copy of the store; <paramref name="rebuild"/> fills it from the entries the first time (after a restart).
    /// </summary>
    public PriorityQueue<string, long> DueIndex(Action<PriorityQueue<string, long>> rebuild)
    {
        if (_due is null)
        {
            var due = new PriorityQueue<string, long>();
            rebuild(due);
            _due = due;
        }

        return _due;
    }

    /// <summary>
    /// Takes the next key of the <see cref="DueIndex"/> that is due before <paramref name="watermark"/> (or at it, when
    /// <paramref name="inclusive"/>) and still has an entry, with that entry; false once no key is due.
    /// </summary>
    public bool TryTakeDue(long watermark, bool inclusive, [MaybeNullWhen(false)] out string key, [MaybeNullWhen(false)] out object value)
    {
        if (_due is null)
        {
            throw new InvalidOperationException("The store's due index is not built yet; call DueIndex first.");
        }

        while (_due.TryPeek(out key, out var due) && (due < watermark || (inclusive && due == watermark)))
        {
            _due.Dequeue();
            if (_entries.TryGetValue(key, out value))
            {
                return true;
            }
        }

        key = null;
        value = null;
        return false;
    }

    /// <summary>Keeps <paramref name="kept"/> as the entry of <paramref name="key"/>, or deletes the entry when none is left.</summary>
    public void PutOrDelete<T>(string key, List<T> kept)
    {
        if (kept.Count == 0)
        {
            Delete(key);
        }
        else
        {
            Put(key, kept.ToArray());
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
