using System.Collections.Concurrent;
using System.Text;

namespace Herald.RabbitMQ.Transport;

/// <summary>
/// A concurrent memo of a pure function for values that repeat from message to message (message types, header names).
/// Stops growing at <see cref="Capacity"/> entries, after which misses are computed each time, so arbitrary inputs
/// cannot grow it without bound.
/// </summary>
internal sealed class BoundedCache<TKey, TValue>(Func<TKey, TValue> create)
    where TKey : notnull
{
    public const int Capacity = 1024;

    private readonly ConcurrentDictionary<TKey, TValue> _entries = new();

    public TValue Get(TKey key)
    {
        if (_entries.TryGetValue(key, out var value))
        {
            return value;
        }

        value = create(key);
        if (_entries.Count < Capacity)
        {
            _entries.TryAdd(key, value);
        }

        return value;
    }
}

/// <summary>
/// Decodes short UTF-8 header values into strings, returning the same string instance for the same bytes from a small
/// direct-mapped table (message types, sources, spec versions repeat on every message). Lock-free: an entry is an
/// immutable pair replaced as a whole.
/// </summary>
internal static class Utf8Intern
{
    private const int Size = 256;
    private const int MaxLength = 128;

    private static readonly Entry?[] Entries = new Entry?[Size];

    public static string Get(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length == 0)
        {
            return string.Empty;
        }

        if (bytes.Length > MaxLength)
        {
            return Encoding.UTF8.GetString(bytes);
        }

        var hash = new HashCode();
        hash.AddBytes(bytes);
        var slot = (int)((uint)hash.ToHashCode() % Size);
        var entry = Volatile.Read(ref Entries[slot]);
        if (entry is not null && bytes.SequenceEqual(entry.Bytes))
        {
            return entry.Text;
        }

        var text = Encoding.UTF8.GetString(bytes);
        Volatile.Write(ref Entries[slot], new Entry(bytes.ToArray(), text));
        return text;
    }

    private sealed record Entry(byte[] Bytes, string Text);
}
