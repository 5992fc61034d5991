using Herald.Internal;

namespace Herald.Reliability.Outbox;

/// <summary>
/// Wakes the relay when a unit of work with outbox messages commits. Unlike a bare <see cref="Signal"/>, a wake is kept
/// until the relay waits (it may be busy sending when the commit lands), and wakes coalesce: many commits meanwhile cost
/// one pulse.
/// </summary>
internal sealed class OutboxSignal
{
    private readonly Signal _signal = new();
    private int _woken;

    public void Wake()
    {
        if (Interlocked.Exchange(ref _woken, 1) == 0)
        {
            _signal.Pulse();
        }
    }

    /// <summary>Waits for a wake or until <paramref name="timeout"/> passes on the clock; true when woken.</summary>
    public async ValueTask<bool> WaitAsync(TimeSpan timeout, TimeProvider timeProvider, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();

        // Taken before the flag is read: a wake after the read pulses this task.
        var next = _signal.Next;
        if (Interlocked.Exchange(ref _woken, 0) == 1)
        {
            return true;
        }

        await Signal.WaitAsync(next, timeout, timeProvider, cancellationToken).ConfigureAwait(false);
        return Interlocked.Exchange(ref _woken, 0) == 1;
    }
}
