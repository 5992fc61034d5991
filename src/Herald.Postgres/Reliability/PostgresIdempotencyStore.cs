using Herald.Internal;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Internal;
using Herald.Reliability.Idempotency;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.Reliability;

/// <summary>
/// Idempotency keys in the <c>idempotency</c> table of a <see cref="PostgresEventStore"/>'s schema, expiring on the
/// injected clock (never the server's). An acquire is one <c>INSERT ... ON CONFLICT DO UPDATE ... WHERE expired</c>, so of
/// concurrent acquires exactly one takes the lock; complete and release act only with the current lock token.
/// </summary>
/// <param name="store">The event store in whose schema the table lives (it creates and migrates it).</param>
/// <param name="timeProvider">The clock the keys expire on; the system clock when null.</param>
/// <param name="keyPrefix">Put before every key as stored: the host's application's, so applications sharing the schema keep their own keys.</param>
internal sealed class PostgresIdempotencyStore(PostgresEventStore store, TimeProvider? timeProvider = null, string keyPrefix = "") : IIdempotencyStore
{
    private const int SweepEvery = 1024;
    private const int SweepBatch = 1000;


    private readonly PostgresEventStore _store = store ?? throw new ArgumentNullException(nameof(store));
    private readonly TimeProvider _timeProvider = timeProvider ?? TimeProvider.System;
    private readonly IdempotencyKeys _keys = new(keyPrefix);
    private readonly TableSql _sql = new(store.Table("idempotency"));
    private int _acquires;

    /// <inheritdoc />
    public async ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default)
    {
        key = ScopedKey(key);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(lockTtl, TimeSpan.Zero);
        var now = _timeProvider.GetUtcNow();
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        if (Interlocked.Increment(ref _acquires) % SweepEvery == 0)
        {
            await using var sweep = new NpgsqlCommand(_sql.Sweep, connection);
            sweep.Parameters.Add(EnvelopeColumns.Time(now));
            sweep.Parameters.Add(EnvelopeColumns.Int(SweepBatch));
            sweep.Parameters.Add(EnvelopeColumns.Time(now - IdempotentCompletion.AbandonedLockGrace));
            await sweep.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        // A live key that is released between the take and the look comes back as free: take again.
        while (true)
        {
            var token = Guid.NewGuid();
            await using (var take = new NpgsqlCommand(_sql.Take, connection))
            {
                take.Parameters.Add(EnvelopeColumns.Text(key));
                take.Parameters.Add(EnvelopeColumns.Id(token));
                take.Parameters.Add(EnvelopeColumns.Time(now + lockTtl));
                take.Parameters.Add(EnvelopeColumns.Time(now));
                if (await take.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1)
                {
                    return IdempotencyAcquireResult.Acquired(token);
                }
            }

            await using var find = new NpgsqlCommand(_sql.Find, connection);
            find.Parameters.Add(EnvelopeColumns.Text(key));
            find.Parameters.Add(EnvelopeColumns.Time(now));
            await using var reader = await find.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            if (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                return reader.GetBoolean(0)
                    ? IdempotencyAcquireResult.Completed(reader.IsDBNull(1) ? ReadOnlyMemory<byte>.Empty : reader.GetFieldValue<byte[]>(1))
                    : IdempotencyAcquireResult.Locked;
            }
        }
    }

    /// <inheritdoc />
    public async ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default)
    {
        key = ScopedKey(key);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(ttl, TimeSpan.Zero);
        var expiresAt = _timeProvider.GetUtcNow() + ttl;
        NpgsqlParameter[] parameters =
        [
            EnvelopeColumns.Text(key),
            EnvelopeColumns.Id(lockToken),
            new NpgsqlParameter<byte[]> { TypedValue = result.ToArray(), NpgsqlDbType = NpgsqlDbType.Bytea },
            EnvelopeColumns.Time(expiresAt),
        ];
        return await _store.ExecuteAloneAsync(_sql.Complete, parameters, cancellationToken).ConfigureAwait(false) == 1;
    }

    /// <inheritdoc />
    public async ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default)
    {
        key = ScopedKey(key);
        return await _store.ExecuteAloneAsync(_sql.Release, [EnvelopeColumns.Text(key), EnvelopeColumns.Id(lockToken)], cancellationToken).ConfigureAwait(false) == 1;
    }

    /// <inheritdoc />
    public async ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default)
    {
        key = ScopedKey(key);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(lockTtl, TimeSpan.Zero);
        var expiresAt = _timeProvider.GetUtcNow() + lockTtl;
        NpgsqlParameter[] parameters = [EnvelopeColumns.Text(key), EnvelopeColumns.Id(lockToken), EnvelopeColumns.Time(expiresAt)];
        return await _store.ExecuteAloneAsync(_sql.Renew, parameters, cancellationToken).ConfigureAwait(false) == 1;
    }

    private string ScopedKey(string key)
    {
        var scoped = _keys.Scoped(key);
        NulText.ThrowIfHeld(key, "idempotency key", nameof(key));
        return scoped;
    }

    /// <summary>The statements on the <c>idempotency</c> table of the store's schema.</summary>
    private sealed class TableSql(string table)
    {
        public string Take { get; } = $"INSERT INTO {table} AS k (idempotency_key, lock_token, completed, result, expires_at) VALUES ($1, $2, false, NULL, $3) " +
            "ON CONFLICT (idempotency_key) DO UPDATE SET lock_token = excluded.lock_token, completed = false, result = NULL, expires_at = excluded.expires_at " +
            "WHERE k.expires_at <= $4";

        public string Find { get; } = $"SELECT completed, result FROM {table} WHERE idempotency_key = $1 AND expires_at > $2";

        // A result already stored under this token is this holder's own (a retry whose first reply was lost): the row is
        // matched, so the completion reports it stored, and kept as it is (the right-hand sides read the row as it was).
        public string Complete { get; } = $"UPDATE {table} SET completed = true, result = CASE WHEN completed THEN result ELSE $3 END, " +
            "expires_at = CASE WHEN completed THEN expires_at ELSE $4 END WHERE idempotency_key = $1 AND lock_token = $2";

        public string Release { get; } = $"DELETE FROM {table} WHERE idempotency_key = $1 AND lock_token = $2 AND NOT completed";

        public string Renew { get; } = $"UPDATE {table} SET expires_at = $3 WHERE idempotency_key = $1 AND lock_token = $2 AND NOT completed";

        // An expired lock nobody took is still its holder's (the store contract): swept only once abandoned ($3). The
        // condition is checked again outside the subquery: a key another caller took while the delete waited on its row lock
        // is live once that commits, and only the outer WHERE is checked against the row's new version (READ COMMITTED).
        public string Sweep { get; } = $"DELETE FROM {table} WHERE idempotency_key IN (SELECT idempotency_key FROM {table} WHERE {Sweepable} LIMIT $2) AND {Sweepable}";

        private const string Sweepable = "expires_at <= $1 AND (completed OR expires_at <= $3)";
    }
}
