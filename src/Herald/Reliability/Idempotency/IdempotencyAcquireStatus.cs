namespace Herald.Reliability.Idempotency;

/// <summary>The state of an idempotency key when a caller tries to take it.</summary>
public enum IdempotencyAcquireStatus
{
    /// <summary>The key was free: this caller holds its lock and runs the operation.</summary>
    Acquired,

    /// <summary>The operation already completed: its stored result is returned.</summary>
    Completed,

    /// <summary>Another caller holds the lock and is running the operation.</summary>
    Locked,
}
