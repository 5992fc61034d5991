namespace Herald.Internal;

/// <summary>
/// A <see cref="Signal"/> that also remembers the highest position known to be committed, for an event store's readers:
/// they take <see cref="Next"/>, compare <see cref="LastPosition"/>, and wait. An extension point for adapter packages, not
/// for application code.
/// </summary>
public sealed class PositionSignal
{
    private readonly Signal _signal = new();
    private long _lastPosition;

    /// <summary>The highest position recorded so far.</summary>
    public long LastPosition => Interlocked.Read(ref _lastPosition);

    /// <summary>Completes at the next <see cref="Publish"/> or <see cref="Pulse"/>; take it before checking the position.</summary>
    public Task Next => _signal.Next;

    /// <summary>Records a commit up to <paramref name="position"/> and wakes every waiter.</summary>
    public void Publish(long position)
    {
        Observe(position);
        _signal.Pulse();
    }

    /// <summary>Records a position seen elsewhere (another process's commit) without waking anyone.</summary>
    public void Observe(long position)
    {
        var seen = LastPosition;
        while (position > seen)
        {
            var previous = Interlocked.CompareExchange(ref _lastPosition, position, seen);
            if (previous == seen)
            {
                return;
            }

            seen = previous;
        }
    }

    /// <summary>Wakes every waiter without recording a position (something else may have changed).</summary>
    public void Pulse() => _signal.Pulse();

    /// <summary>Fails present and future waiters with <paramref name="reason"/>.</summary>
    public void Close(Exception reason) => _signal.Close(reason);
}
