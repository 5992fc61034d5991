namespace Herald.Reliability.Idempotency;

/// <summary>
/// The port behind <see cref="IdempotencyService"/> (one conformance suite, <c>IdempotencyStoreConformance</c>, defines it).
/// A key is free, locked (by one holder, until its lock ttl passes) or completed (holding result bytes until its ttl
/// passes). Contract:
/// <list type="bullet">
/// <item>Of concurrent acquires of a free key, exactly one gets <see cref="IdempotencyAcquireStatus.Acquired"/>.</item>
/// <item>Expiry follows the store's <see cref="TimeProvider"/> (never a server clock alone), so tests can drive it.</item>
/// <item>Complete, release and renew act only with the current lock token: a holder whose lock expired and was taken by
/// another caller can neither overwrite, free nor extend the new holder's key. Until another caller takes it, an expired
/// lock is still its holder's: complete and renew succeed (a holder back from a store outage longer than the lock ttl
/// stores its result rather than leave the operation to run again).</item>
/// <item>A complete repeated with the token that stored the result (a retry of one whose reply was lost) reports it stored
/// and keeps the first result; renew refuses a completed key, so a retry whose renewal is refused completes once more to
/// tell its own stored result from a lock another caller took.</item>
/// <item>Result bytes round-trip exactly (empty included). Keys are ordinal strings of 1 to 200 characters.</item>
/// </list>
/// </summary>
public interface IIdempotencyStore
{
    /// <summary>Takes the key's lock for <paramref name="lockTtl"/> when it is free (or expired); otherwise reports the stored result or the lock.</summary>
    ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default);

    /// <summary>
    /// Stores the result for <paramref name="ttl"/> and frees the lock; false (nothing stored) when <paramref name="lockToken"/>
    /// no longer holds the key. True, the stored result kept as it is, when <paramref name="lockToken"/> already stored one.
    /// </summary>
    ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default);

    /// <summary>Frees the key without a result (the operation failed); false when <paramref name="lockToken"/> no longer holds it.</summary>
    ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default);

    /// <summary>
    /// Extends the lock to <paramref name="lockTtl"/> from now while its operation runs; false when <paramref name="lockToken"/>
    /// no longer holds the key (another caller took it after it expired, or it completed).
    /// </summary>
    ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default);
}
