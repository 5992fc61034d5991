namespace Herald.Reliability.Idempotency;

/// <summary>What <see cref="IIdempotencyStore.TryAcquireAsync"/> found: the lock (with its token), a stored result, or someone else's lock.</summary>
public readonly record struct IdempotencyAcquireResult
{
    private IdempotencyAcquireResult(IdempotencyAcquireStatus status, Guid lockToken, ReadOnlyMemory<byte> result)
    {
        Status = status;
        LockToken = lockToken;
        Result = result;
    }

    /// <summary>Someone else holds the lock.</summary>
    public static IdempotencyAcquireResult Locked { get; } = new(IdempotencyAcquireStatus.Locked, Guid.Empty, ReadOnlyMemory<byte>.Empty);

    /// <summary>Which of the three it is.</summary>
    public IdempotencyAcquireStatus Status { get; }

    /// <summary>When acquired: the token that proves this caller holds the lock (pass it to complete and release).</summary>
    public Guid LockToken { get; }

    /// <summary>When completed: the stored result bytes.</summary>
    public ReadOnlyMemory<byte> Result { get; }

    /// <summary>The caller holds the lock, proven by <paramref name="lockToken"/>.</summary>
    public static IdempotencyAcquireResult Acquired(Guid lockToken) => new(IdempotencyAcquireStatus.Acquired, lockToken, ReadOnlyMemory<byte>.Empty);

    /// <summary>The operation completed earlier with this result.</summary>
    public static IdempotencyAcquireResult Completed(ReadOnlyMemory<byte> result) => new(IdempotencyAcquireStatus.Completed, Guid.Empty, result);
}
