namespace Herald.Testing.Internal;

/// <summary>
/// Counts the deliveries the harness's host still owes: every message sent or published to a queue of this host is due
/// (at once, or when its delay passes on the fake clock) until a delivery of it is acked or dead-lettered. The host is
/// idle when no delivery runs and none is due; messages due later wait for the test to move the clock.
/// </summary>
/// <remarks>
/// A message is counted before it is handed to the transport, and a delivery's settlement is counted before the delivery
/// ends, so "idle" is never seen while a message is between the two. <see cref="Version"/> moves on every change, so a
/// caller can tell that nothing happened between two looks.
/// </remarks>
internal sealed class DeliveryTracker(TimeProvider clock)
{
    private readonly Lock _gate = new();
    private readonly HashSet<string> _consumed = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<string>> _bindings = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Queue, Guid MessageId), List<DateTimeOffset>> _due = [];
    private int _running;
    private long _version;

    public long Version
    {
        get
        {
            lock (_gate)
            {
                return _version;
            }
        }
    }

    public void Bound(string topic, string queue)
    {
        lock (_gate)
        {
            var queues = _bindings.TryGetValue(topic, out var existing) ? existing : _bindings[topic] = [];
            if (!queues.Contains(queue, StringComparer.Ordinal))
            {
                queues.Add(queue);
            }
        }
    }

    public void Consuming(string queue)
    {
        lock (_gate)
        {
            _consumed.Add(queue);
            _version++;
        }
    }

    /// <summary>Counts a message about to be sent (or published); returns what to hand to <see cref="Forget"/> if the send fails.</summary>
    public IReadOnlyList<(string Queue, Guid MessageId, DateTimeOffset Due)> Expect(string destination, bool published, Guid messageId, TimeSpan? delay)
    {
        lock (_gate)
        {
            var due = clock.GetUtcNow() + (delay is { } d && d > TimeSpan.Zero ? d : TimeSpan.Zero);
            IReadOnlyList<string> queues = published ? (_bindings.TryGetValue(destination, out var bound) ? [.. bound] : []) : [destination];
            var expected = new List<(string, Guid, DateTimeOffset)>(queues.Count);
            foreach (var queue in queues)
            {
                Due(queue, messageId).Add(due);
                expected.Add((queue, messageId, due));
            }

            _version++;
            return expected;
        }
    }

    public void Forget(IReadOnlyList<(string Queue, Guid MessageId, DateTimeOffset Due)> expected)
    {
        lock (_gate)
        {
            foreach (var (queue, id, due) in expected)
            {
                if (_due.TryGetValue((queue, id), out var times))
                {
                    times.Remove(due);
                    Prune(queue, id, times);
                }
            }

            _version++;
        }
    }

    public void Started()
    {
        lock (_gate)
        {
            _running++;
            _version++;
        }
    }

    public void Ended()
    {
        lock (_gate)
        {
            _running--;
            _version++;
        }
    }

    /// <summary>A delivery of the message was settled: it is owed no more, or (redelivered) owed again after <paramref name="redeliverAfter"/>.</summary>
    public void Settled(string queue, Guid messageId, TimeSpan? redeliverAfter)
    {
        lock (_gate)
        {
            var now = clock.GetUtcNow();
            var times = Due(queue, messageId);

            // The delivery that just ran stands for the earliest of the message's due times.
            if (times.Count > 0)
            {
                var earliest = times.Min();
                times.Remove(earliest);
            }

            if (redeliverAfter is { } delay)
            {
                times.Add(now + delay);
            }

            Prune(queue, messageId, times);
            _version++;
        }
    }

    /// <summary>True when no delivery runs and none is due now; else false with what is under way.</summary>
    public bool IsIdle(out string underWay)
    {
        lock (_gate)
        {
            var now = clock.GetUtcNow();
            var due = _due.Where(e => _consumed.Contains(e.Key.Queue)).Sum(e => e.Value.Count(t => t <= now));
            underWay = $"{_running} deliveries running, {due} due";
            return _running == 0 && due == 0;
        }
    }

    /// <summary>The earliest time after <paramref name="now"/> at which a message becomes due at a queue this host consumes; null when none will.</summary>
    public DateTimeOffset? NextDue(DateTimeOffset now)
    {
        lock (_gate)
        {
            return _due.Where(e => _consumed.Contains(e.Key.Queue)).SelectMany(e => e.Value).Where(t => t > now).Select(t => (DateTimeOffset?)t).Min();
        }
    }

    private List<DateTimeOffset> Due(string queue, Guid messageId) =>
        _due.TryGetValue((queue, messageId), out var times) ? times : _due[(queue, messageId)] = [];

    private void Prune(string queue, Guid messageId, List<DateTimeOffset> times)
    {
        if (times.Count == 0)
        {
            _due.Remove((queue, messageId));
        }
    }
}
