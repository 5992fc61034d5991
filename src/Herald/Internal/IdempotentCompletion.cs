using Herald.Reliability.Idempotency;

namespace Herald.Internal;

/// <summary>
/// Stores the result of an operation run under an idempotency lock, for the idempotency service and the HTTP
/// <c>Idempotency-Key</c> endpoints alike. A result left unstored lets the next caller run the operation again once the
/// lock lapses, so a failing store (a server restarting) is tried again, with a growing pause (50 ms doubling to 1 s), for
/// up to 60% of the lock timeout: while the lock, renewed at most a third of it ago, is still this caller's (issue 10).
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class IdempotentCompletion
{
    private static readonly TimeSpan FirstRetryDelay = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan MaxRetryDelay = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Stores <paramref name="result"/> under <paramref name="key"/> if <paramref name="lockToken"/> still holds it; false
    /// when the lock is no longer this caller's. Throws the store's last failure once the retries are spent.
    /// </summary>
    /// <param name="store">The idempotency store.</param>
    /// <param name="key">The key.</param>
    /// <param name="lockToken">The token the lock was taken with.</param>
    /// <param name="result">The result to keep.</param>
    /// <param name="ttl">How long the result is kept.</param>
    /// <param name="lockTimeout">The lock's timeout, which bounds the retries.</param>
    /// <param name="clock">The clock the pauses run on.</param>
    /// <param name="retrying">Told of each failure that is tried again, with the pause before the next try.</param>
    public static async ValueTask<bool> StoreAsync(
        IIdempotencyStore store,
        string key,
        Guid lockToken,
        ReadOnlyMemory<byte> result,
        TimeSpan ttl,
        TimeSpan lockTimeout,
        TimeProvider clock,
        Action<Exception, TimeSpan> retrying)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(clock);
        ArgumentNullException.ThrowIfNull(retrying);
        var started = clock.GetTimestamp();
        var pause = FirstRetryDelay;
        while (true)
        {
            try
            {
                return await store.CompleteAsync(key, lockToken, result, ttl, CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException && clock.GetElapsedTime(started) + pause < lockTimeout * 0.6)
            {
                retrying(ex, pause);
                await Task.Delay(pause, clock).ConfigureAwait(false);
                pause = pause * 2 > MaxRetryDelay ? MaxRetryDelay : pause * 2;
            }
        }
    }
}
