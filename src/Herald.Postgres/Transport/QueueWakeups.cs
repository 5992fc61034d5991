using System.Collections.Concurrent;
using Herald.Postgres.Notifications;

namespace Herald.Postgres.Transport;

/// <summary>Wakes this process's consumers of a queue when a commit (here or, through NOTIFY, anywhere) may have made a message claimable.</summary>
internal sealed class QueueWakeups
{
    private readonly ConcurrentDictionary<string, ChangeSignal> _signals = new(StringComparer.Ordinal);

    /// <summary>Completes at the next wake-up of the queue; take it before looking at the queue, so no commit falls between.</summary>
    public Task Next(string queue) => _signals.GetOrAdd(queue, static _ => new ChangeSignal()).Next;

    /// <summary>Wakes the consumers of one queue, or of every queue when <paramref name="queue"/> is null (notifications may have been lost).</summary>
    public void Wake(string? queue)
    {
        if (queue is null)
        {
            foreach (var signal in _signals.Values)
            {
                signal.Fire();
            }
        }
        else if (_signals.TryGetValue(queue, out var signal))
        {
            signal.Fire();
        }
    }
}
