namespace Herald.Benchmarks.InProcess;

/// <summary>
/// Counts handled messages and signals when the expected number arrived. Public (as are the handlers and messages)
/// because Wolverine generates and compiles handler code that references it.
/// </summary>
public sealed class HandledCounter
{
    private long _handled;
    private long _expected = long.MaxValue;
    private TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public long Handled => Volatile.Read(ref _handled);

    /// <summary>Starts a run of <paramref name="expected"/> messages.</summary>
    public void Reset(long expected)
    {
        _done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _handled, 0);
        Volatile.Write(ref _expected, expected);
    }

    public void Increment()
    {
        if (Interlocked.Increment(ref _handled) == Volatile.Read(ref _expected))
        {
            _done.TrySetResult();
        }
    }

    /// <summary>Ends the run at once with <paramref name="reason"/>: a message was lost (dead-lettered, faulted), so the count would never be reached.</summary>
    public void Fail(string reason) => _done.TrySetException(new InvalidOperationException(reason));

    /// <summary>Completes when every expected message was handled; throws with the count reached on timeout.</summary>
    public async Task WaitAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        try
        {
            await _done.Task.WaitAsync(timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"Only {Handled:N0} of {Volatile.Read(ref _expected):N0} messages were handled within {timeout}.", ex);
        }
    }
}
