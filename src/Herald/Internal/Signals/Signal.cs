namespace Herald.Internal;

/// <summary>
/// A wake-up for waiting loops: <see cref="Next"/> completes at the next <see cref="Pulse"/>, which starts a new one. Take
/// <see cref="Next"/> before looking at the state it announces, so a pulse in between is not lost. An extension point for
/// adapter packages (stores and transports), not for application code.
/// </summary>
public sealed class Signal
{
    private TaskCompletionSource _next = New();

    /// <summary>Completes at the next <see cref="Pulse"/> (or fails after <see cref="Close"/>).</summary>
    public Task Next => Volatile.Read(ref _next).Task;

    /// <summary>Wakes every waiter of the current <see cref="Next"/>; a later waiter waits for the next pulse.</summary>
    public void Pulse() => Interlocked.Exchange(ref _next, New()).TrySetResult();

    /// <summary>Fails present and future waiters with <paramref name="reason"/> (the owner was disposed).</summary>
    public void Close(Exception reason)
    {
        ArgumentNullException.ThrowIfNull(reason);
        var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        closed.SetException(reason);
        var previous = Interlocked.Exchange(ref _next, closed);
        previous.TrySetException(reason);

        // Nobody may be waiting: mark both as observed so the failure is not reported as unobserved.
        _ = closed.Task.Exception;
        _ = previous.Task.Exception;
    }

    /// <summary>
    /// Waits for <paramref name="next"/> (taken from <see cref="Next"/>) or until <paramref name="timeout"/> passes on the
    /// clock, whichever comes first; true when the signal came first. Throws when <paramref name="cancellationToken"/> is
    /// cancelled; a failed signal does not throw here (await it to learn why).
    /// </summary>
    public static async Task<bool> WaitAsync(Task next, TimeSpan timeout, TimeProvider timeProvider, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(next);
        ArgumentNullException.ThrowIfNull(timeProvider);
        cancellationToken.ThrowIfCancellationRequested();
        if (next.IsCompleted)
        {
            return true;
        }

        // The timer is released either way, so a long timeout holds nothing once the signal came.
        using var timer = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var elapsed = Task.Delay(timeout, timeProvider, timer.Token);
        var first = await Task.WhenAny(next, elapsed).ConfigureAwait(false);
        await timer.CancelAsync().ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        return first == next;
    }

    private static TaskCompletionSource New() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
