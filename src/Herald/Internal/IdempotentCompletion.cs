using Herald.Reliability.Idempotency;

namespace Herald.Internal;

/// <summary>
/// Stores the result of an operation run under an idempotency lock, for the idempotency service and the HTTP
/// <c>Idempotency-Key</c> endpoints alike. A result left unstored lets the next caller run the operation again once the
/// lock lapses, so a failing store (a server restarting) is tried again, with a growing pause (50 ms doubling to 1 s), for up
/// to <see cref="IdempotencyOptions.CompletionTimeout"/>: each pause ends with a renewal of the lock, so the key stays this
/// caller's where the store still takes renewals, and a completion after an outage longer than the lock timeout still
/// succeeds while no other caller has taken the key (the store contract). A completion the store refuses (the key is no
/// longer this caller's) ends the retries without the result stored (issue 10); a refused renewal ends them with one last
/// completion, which reports stored where a try whose reply was lost had stored the result (the store contract). The
/// timeout ends them too, with a <see cref="TimeoutException"/>, rather than hold the caller (a request, a consumer's
/// worker) for as long as the store stays down or keeps rejecting the result: the lock, no longer renewed, then lapses as a
/// dead holder's does.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class IdempotentCompletion
{
    private static readonly TimeSpan FirstRetryDelay = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// How long past its expiry a store keeps a lock nobody took before its sweep of expired keys removes it: until then it
    /// is still its holder's (the store contract), so a holder back from a store outage still stores its result.
    /// </summary>
    public static TimeSpan AbandonedLockGrace { get; } = TimeSpan.FromDays(1);
    private static readonly TimeSpan MaxRetryDelay = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Stores <paramref name="result"/> under <paramref name="key"/> if <paramref name="lockToken"/> still holds it; false
    /// when the lock is no longer this caller's. A failing store is tried again for up to <paramref name="timeout"/>, then
    /// <see cref="TimeoutException"/> (carrying the last failure) says the result was not stored.
    /// </summary>
    /// <param name="store">The idempotency store.</param>
    /// <param name="key">The key.</param>
    /// <param name="lockToken">The token the lock was taken with.</param>
    /// <param name="result">The result to keep.</param>
    /// <param name="ttl">How long the result is kept.</param>
    /// <param name="lockTimeout">The lock's timeout, which each renewal between tries extends it by.</param>
    /// <param name="timeout">How long a failing store is tried again before the result is given up.</param>
    /// <param name="clock">The clock the pauses and the timeout run on.</param>
    /// <param name="retrying">Told of each failure that is tried again, with the pause before the next try.</param>
    public static async ValueTask<bool> StoreAsync(
        IIdempotencyStore store,
        string key,
        Guid lockToken,
        ReadOnlyMemory<byte> result,
        TimeSpan ttl,
        TimeSpan lockTimeout,
        TimeSpan timeout,
        TimeProvider clock,
        Action<Exception, TimeSpan> retrying)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(clock);
        ArgumentNullException.ThrowIfNull(retrying);
        var pause = FirstRetryDelay;
        var deadline = clock.GetUtcNow() + timeout;
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
                var remaining = deadline - clock.GetUtcNow();
                if (remaining <= TimeSpan.Zero)
                {
                    throw new TimeoutException($"The result of idempotency key '{key}' was not stored: the store kept failing for {timeout} (IdempotencyOptions.CompletionTimeout).", ex);
                }

                pause = pause < remaining ? pause : remaining;
                retrying(ex, pause);
            }

            await Task.Delay(pause, clock).ConfigureAwait(false);
            pause = pause * 2 > MaxRetryDelay ? MaxRetryDelay : pause * 2;
            try
            {
                if (!await store.RenewAsync(key, lockToken, lockTimeout, CancellationToken.None).ConfigureAwait(false))
                {
                    // Refused: another caller took the key, or the try that failed stored the result before its reply was
                    // lost. A last completion tells which, where the store repeats a completion with its token as done.
                    return await store.CompleteAsync(key, lockToken, result, ttl, CancellationToken.None).ConfigureAwait(false);
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // Failing too (the store is down): the completion tried next, once it answers, says whether the key is ours.
            }
        }
    }
}
