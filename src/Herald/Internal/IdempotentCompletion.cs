using Herald.Reliability.Idempotency;

namespace Herald.Internal;

/// <summary>
/// Stores the result of an operation run under an idempotency lock, for the idempotency service and the HTTP
/// <c>Idempotency-Key</c> endpoints alike. A result left unstored lets the next caller run the operation again once the
/// lock lapses, so a failing store (a server restarting) is tried again, with a growing pause (50 ms doubling to 1 s), for as
/// long as it takes: each pause ends with a renewal of the lock, so the key stays this caller's where the store still takes
/// renewals, and a completion after an outage longer than the lock timeout still succeeds while no other caller has taken
/// the key (the store contract). Only a completion or renewal the store refuses (the key is no longer this caller's) ends
/// the retries without the result stored (issue 10).
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class IdempotentCompletion
{
    private static readonly TimeSpan FirstRetryDelay = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan MaxRetryDelay = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Stores <paramref name="result"/> under <paramref name="key"/> if <paramref name="lockToken"/> still holds it; false
    /// when the lock is no longer this caller's. A failing store is tried again until it answers.
    /// </summary>
    /// <param name="store">The idempotency store.</param>
    /// <param name="key">The key.</param>
    /// <param name="lockToken">The token the lock was taken with.</param>
    /// <param name="result">The result to keep.</param>
    /// <param name="ttl">How long the result is kept.</param>
    /// <param name="lockTimeout">The lock's timeout, which each renewal between tries extends it by.</param>
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
        var pause = FirstRetryDelay;
        while (true)
        {
            // No cancellation: the operation took effect, and only its stored result keeps it from running again. A
            // process that stops meanwhile leaves the lock to expire, as a dead holder's does.
            try
            {
                return await store.CompleteAsync(key, lockToken, result, ttl, CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                retrying(ex, pause);
            }

            await Task.Delay(pause, clock).ConfigureAwait(false);
            pause = pause * 2 > MaxRetryDelay ? MaxRetryDelay : pause * 2;
            try
            {
                if (!await store.RenewAsync(key, lockToken, lockTimeout, CancellationToken.None).ConfigureAwait(false))
                {
                    return false;
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // Failing too (the store is down): the completion tried next, once it answers, says whether the key is ours.
            }
        }
    }
}
