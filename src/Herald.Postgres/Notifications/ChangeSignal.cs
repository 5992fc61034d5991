namespace Herald.Postgres.Notifications;

/// <summary>A wake-up for waiting readers: a task that completes on the next <see cref="Fire"/>, then is replaced.</summary>
internal sealed class ChangeSignal
{
    private TaskCompletionSource _next = New();

    /// <summary>Completes at the next <see cref="Fire"/>; take it before checking state, so no wake-up is lost in between.</summary>
    public Task Next => Volatile.Read(ref _next).Task;

    public void Fire() => Interlocked.Exchange(ref _next, New()).TrySetResult();

    private static TaskCompletionSource New() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
