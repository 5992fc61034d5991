namespace Herald.Sqlite.Internal;

/// <summary>Wakes waiters after each commit that appended events, and remembers the highest position known to be readable.</summary>
internal sealed class CommitSignal
{
    private TaskCompletionSource _next = NewSignal();
    private long _lastPosition;

    /// <summary>The highest position known to be committed (by this store, or seen in the file).</summary>
    public long LastPosition => Interlocked.Read(ref _lastPosition);

    /// <summary>Completes at the next commit that appends; take it before checking the position, so no commit falls between.</summary>
    public Task Next => Volatile.Read(ref _next).Task;

    /// <summary>Records a commit up to <paramref name="position"/> and wakes every waiter.</summary>
    public void Publish(long position)
    {
        Observe(position);
        Interlocked.Exchange(ref _next, NewSignal()).TrySetResult();
    }

    /// <summary>Records a position read from the file (another process's commit), without waking anyone.</summary>
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

    /// <summary>Fails present and future waiters (the store was disposed).</summary>
    public void Close(Exception reason)
    {
        var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        closed.SetException(reason);
        var previous = Interlocked.Exchange(ref _next, closed);
        previous.TrySetException(reason);

        // Nobody may be waiting: mark both as observed so the failure is not reported as unobserved.
        _ = closed.Task.Exception;
        _ = previous.Task.Exception;
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
