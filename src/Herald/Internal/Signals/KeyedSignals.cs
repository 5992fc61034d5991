using System.Collections.Concurrent;

namespace Herald.Internal;

/// <summary>
/// One <see cref="Signal"/> per key (a queue, a stream): wakes the waiters of one key, or of all. An extension point for
/// adapter packages, not for application code.
/// </summary>
public sealed class KeyedSignals
{
    private readonly ConcurrentDictionary<string, Signal> _signals = new(StringComparer.Ordinal);

    /// <summary>Completes at the next pulse of <paramref name="key"/>; take it before looking, so no commit falls between.</summary>
    public Task Next(string key) => _signals.GetOrAdd(key, static _ => new Signal()).Next;

    /// <summary>Wakes the waiters of <paramref name="key"/> (nobody waits on a key no one asked for).</summary>
    public void Pulse(string key)
    {
        if (_signals.TryGetValue(key, out var signal))
        {
            signal.Pulse();
        }
    }

    /// <summary>Wakes the waiters of every key (when anything may have changed, for instance after lost notifications).</summary>
    public void PulseAll()
    {
        foreach (var signal in _signals.Values)
        {
            signal.Pulse();
        }
    }
}
