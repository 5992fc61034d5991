namespace Herald.Reliability.Idempotency;

/// <summary>Thrown when a caller waited longer than the wait timeout for another caller running the same idempotent operation.</summary>
public sealed class IdempotencyTimeoutException : HeraldException
{
    /// <summary>Creates the exception naming the key and how long the caller waited.</summary>
    public IdempotencyTimeoutException(string key, TimeSpan waited)
        : base($"The operation with idempotency key '{key}' is still running elsewhere after waiting {waited}; try again later, " +
               "or raise IdempotencyOptions.WaitTimeout if the operation is legitimately that slow.")
    {
        Key = key;
        Waited = waited;
    }

    /// <summary>The idempotency key.</summary>
    public string Key { get; }

    /// <summary>How long the caller waited.</summary>
    public TimeSpan Waited { get; }
}
