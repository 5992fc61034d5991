using System.Collections.Concurrent;

namespace Herald.Reliability.DeadLetters;

/// <summary>
/// Remembers when each message first failed at this node, so a dead letter can tell its first failure from its last
/// across delayed redeliveries. Bounded: when full it forgets everything (first-failure times then fall back to the last).
/// </summary>
internal sealed class FailureTracker
{
    private const int Capacity = 10_000;
    private readonly ConcurrentDictionary<Guid, DateTimeOffset> _firstFailures = new();

    public DateTimeOffset RecordFailure(Guid messageId, DateTimeOffset now)
    {
        if (_firstFailures.Count >= Capacity)
        {
            _firstFailures.Clear();
        }

        return _firstFailures.GetOrAdd(messageId, now);
    }

    public void Forget(Guid messageId) => _firstFailures.TryRemove(messageId, out _);
}
