using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;

namespace Herald.Streams.Topology;

/// <summary>
/// One task's copy of a state store: the values in memory, plus the keys changed since the last commit, which the
/// processor writes to the durable state store in the same unit of work as the source checkpoint.
/// </summary>
internal sealed class StateStore(StoreSpec spec)
{
    /// <summary>
    /// The longest state key (a grouping key's JSON, with a window's start), in UTF-8 bytes: PostgreSQL's primary-key index
    /// holds an entry of at most about 2.7 kB, and every store refuses alike, as read models refuse such document ids.
    /// </summary>
    internal const int MaxKeyBytes = 1024;

    private readonly Dictionary<string, object> _entries = new(StringComparer.Ordinal);
    private readonly HashSet<string> _dirty = new(StringComparer.Ordinal);
    private PriorityQueue<string, long>? _due;

    // While a record is in hand (Journal): each key's entry before the record first changed it, and whether the key was
    // changed since the last commit then, so a record that fails partway can be undone. Reused, so a record allocates nothing.
    private readonly Dictionary<string, (bool Had, object? Value, bool Dirty)> _undo = new(StringComparer.Ordinal);
    private bool _journaling;

    public StoreSpec Spec => spec;

    public int Count => _entries.Count;

    public IEnumerable<KeyValuePair<string, object>> Entries => _entries;

    public bool TryGet(string key, out object? value) => _entries.TryGetValue(key, out value);

    public void Put(string key, object value)
    {
        // Three bytes at most per UTF-16 unit, so only a long key is counted, and only a new one: an entry loaded from the
        // store (kept before this limit) stays writable, so a timer closing its window never throws.
        if (key.Length > MaxKeyBytes / 3 && !_entries.ContainsKey(key))
        {
            RefuseLongKey(key);
        }

        Remember(key);
        _entries[key] = value;
        _dirty.Add(key);
    }

    public void Delete(string key)
    {
        Remember(key);
        if (_entries.Remove(key))
        {
            _dirty.Add(key);
        }
    }

    /// <summary>Starts keeping what the changes from now on replace, for <see cref="Undo"/>.</summary>
    public void Journal() => _journaling = true;

    /// <summary>Keeps the changes since <see cref="Journal"/> and stops journaling.</summary>
    public void Accept()
    {
        _journaling = false;
        _undo.Clear();
    }

    /// <summary>
    /// Puts back every entry changed since <see cref="Journal"/>, and stops journaling. A key that had no entry loses its
    /// due-index entries too: left there, a later record making the key anew would index it twice, and its window would
    /// close at the first and be deleted as closed at the second, losing its retention.
    /// </summary>
    public void Undo()
    {
        foreach (var (key, before) in _undo)
        {
            if (before.Had)
            {
                _entries[key] = before.Value!;
            }
            else
            {
                _entries.Remove(key);
                while (_due is not null && _due.Remove(key, out _, out _, StringComparer.Ordinal))
                {
                }
            }

            if (!before.Dirty)
            {
                _dirty.Remove(key);
            }
        }

        Accept();
    }

    /// <summary>
    /// Throws when <paramref name="key"/> is too long for every durable store: thrown while its record is in hand, so its
    /// event is dead-lettered (and what it changed undone) instead of failing every commit on PostgreSQL, replay after replay.
    /// </summary>
    private void RefuseLongKey(string key)
    {
        if (Encoding.UTF8.GetByteCount(key) is var bytes and > MaxKeyBytes)
        {
            var shown = key[..(char.IsHighSurrogate(key[39]) ? 39 : 40)]; // not cut inside a pair, which PostgreSQL could not store in the dead letter
            throw new StreamKeyException(string.Create(
                CultureInfo.InvariantCulture,
                $"'{spec.Operator}' cannot keep the key {shown}... in state store '{spec.Name}': it is {bytes} bytes long in UTF-8 (as JSON), and at most {MaxKeyBytes} are allowed (PostgreSQL's primary-key index cannot hold much longer ones), so no state store takes it. Group by a shorter key, such as a hash of the long one."),
                spec.Operator);
        }
    }

    private void Remember(string key)
    {
        if (_journaling && !_undo.ContainsKey(key))
        {
            var had = _entries.TryGetValue(key, out var value);
            _undo.Add(key, (had, value, _dirty.Contains(key)));
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
