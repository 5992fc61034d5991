using Herald.Internal;
using Herald.Sqlite.EventSourcing;
using Herald.Reliability.Idempotency;
using Herald.Sqlite.Internal;

namespace Herald.Sqlite.Reliability;

/// <summary>
/// Idempotency keys in the <c>herald_idempotency</c> table of a <see cref="SqliteEventStore"/>'s file, expiring on the
/// injected clock (never SQLite's). Every acquire, complete and release is one write of the store's single writer, so of
/// concurrent acquires exactly one wins; expired keys are swept as acquires go by.
/// </summary>
/// <param name="store">The store whose file it uses (the store opens and migrates it).</param>
/// <param name="timeProvider">The clock expiries follow; the system clock when null.</param>
/// <param name="keyPrefix">Put before every key as stored: the host's application's, so applications sharing the file keep their own keys.</param>
internal sealed class SqliteIdempotencyStore(SqliteEventStore store, TimeProvider? timeProvider = null, string keyPrefix = "") : IIdempotencyStore
{
    private const int SweepEvery = 1024;
    private const int SweepBatch = 1000;

    private const string FindSql = "SELECT completed, result, expires_at FROM herald_idempotency WHERE idempotency_key = ?1";

    private const string LockSql =
        "INSERT INTO herald_idempotency (idempotency_key, lock_token, completed, result, expires_at) VALUES (?1, ?2, 0, NULL, ?3) " +
        "ON CONFLICT (idempotency_key) DO UPDATE SET lock_token = excluded.lock_token, completed = 0, result = NULL, expires_at = excluded.expires_at";

    // A result already stored under this token is this holder's own (a retry whose first reply was lost): the row is
    // matched, so the completion reports it stored, and kept as it is.
    private const string CompleteSql =
        "UPDATE herald_idempotency SET result = CASE completed WHEN 1 THEN result ELSE ?3 END, " +
        "expires_at = CASE completed WHEN 1 THEN expires_at ELSE ?4 END, completed = 1 WHERE idempotency_key = ?1 AND lock_token = ?2";

    private const string ReleaseSql = "DELETE FROM herald_idempotency WHERE idempotency_key = ?1 AND lock_token = ?2 AND completed = 0";

    private const string RenewSql = "UPDATE herald_idempotency SET expires_at = ?3 WHERE idempotency_key = ?1 AND lock_token = ?2 AND completed = 0";

    // An expired lock nobody took is still its holder's (the store contract): swept only once abandoned (?3).
    private const string SweepSql =
        "DELETE FROM herald_idempotency WHERE idempotency_key IN (SELECT idempotency_key FROM herald_idempotency WHERE expires_at <= ?1 AND (completed = 1 OR expires_at <= ?3) LIMIT ?2)";

    private readonly SqliteEventStore _store = store ?? throw new ArgumentNullException(nameof(store));
    private readonly TimeProvider _timeProvider = timeProvider ?? TimeProvider.System;
    private readonly IdempotencyKeys _keys = new(keyPrefix);
    private int _acquires;

    /// <inheritdoc />
    public async ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default)
    {
        key = _keys.Scoped(key);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(lockTtl, TimeSpan.Zero);
        var now = _timeProvider.GetUtcNow();
        var token = Guid.NewGuid();
        var sweep = Interlocked.Increment(ref _acquires) % SweepEvery == 0;
        return await _store.WriteAsync(session =>
        {
            if (sweep)
            {
                var delete = session.Statement(SweepSql);
                delete.Bind(1, now.UtcTicks);
                delete.Bind(2, SweepBatch);
                delete.Bind(3, (now - IdempotentCompletion.AbandonedLockGrace).UtcTicks);
                delete.Execute();
            }

            var find = session.Statement(FindSql);
            find.Bind(1, key);
            var found = find.Step();
            var live = found && find.Int64(2) > now.UtcTicks;
            var stored = live && find.Int64(0) == 1 ? find.Blob(1).ToArray() : null;
            find.Reset();
            if (live)
            {
                return stored is null ? IdempotencyAcquireResult.Locked : IdempotencyAcquireResult.Completed(stored);
            }

            var take = session.Statement(LockSql);
            take.Bind(1, key);
            take.Bind(2, GuidBytes.Of(token));
            take.Bind(3, (now + lockTtl).UtcTicks);
            take.Execute();
            return IdempotencyAcquireResult.Acquired(token);
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default)
    {
        key = _keys.Scoped(key);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(ttl, TimeSpan.Zero);
        var expiresAt = (_timeProvider.GetUtcNow() + ttl).UtcTicks;
        var bytes = result.ToArray();
        return await _store.WriteAsync(session =>
        {
            var complete = session.Statement(CompleteSql);
            complete.Bind(1, key);
            complete.Bind(2, GuidBytes.Of(lockToken));
            complete.Bind(3, bytes);
            complete.Bind(4, expiresAt);
            complete.Execute();
            return complete.Changes == 1;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default)
    {
        key = _keys.Scoped(key);
        return await _store.WriteAsync(session =>
        {
            var release = session.Statement(ReleaseSql);
            release.Bind(1, key);
            release.Bind(2, GuidBytes.Of(lockToken));
            release.Execute();
            return release.Changes == 1;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default)
    {
        key = _keys.Scoped(key);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(lockTtl, TimeSpan.Zero);
        var expiresAt = (_timeProvider.GetUtcNow() + lockTtl).UtcTicks;
        return await _store.WriteAsync(session =>
        {
            var renew = session.Statement(RenewSql);
            renew.Bind(1, key);
            renew.Bind(2, GuidBytes.Of(lockToken));
            renew.Bind(3, expiresAt);
            renew.Execute();
            return renew.Changes == 1;
        }, cancellationToken).ConfigureAwait(false);
    }
}
