using Herald.Internal;

namespace Herald.Reliability.Idempotency;

/// <summary>Idempotency keys in process memory, expiring on the injected clock; expired keys are swept as the store grows.</summary>
public sealed class InMemoryIdempotencyStore : IIdempotencyStore
{
    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private readonly TimeProvider _timeProvider;
    private int _sweepAt = 1024;

    /// <summary>Creates the store on the given clock.</summary>
    public InMemoryIdempotencyStore(TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(timeProvider);
        _timeProvider = timeProvider;
    }

    /// <inheritdoc />
    public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(lockTtl, TimeSpan.Zero);
        var now = _timeProvider.GetUtcNow();
        lock (_gate)
        {
            if (_entries.TryGetValue(key, out var entry) && entry.ExpiresAt > now)
            {
                return ValueTask.FromResult(entry.Result is { } result ? IdempotencyAcquireResult.Completed(result) : IdempotencyAcquireResult.Locked);
            }

            SweepIfLarge(now);
            var token = Guid.NewGuid();
            _entries[key] = new Entry(token, now + lockTtl, Result: null);
            return ValueTask.FromResult(IdempotencyAcquireResult.Acquired(token));
        }
    }

    /// <inheritdoc />
    public ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(ttl, TimeSpan.Zero);
        var now = _timeProvider.GetUtcNow();
        lock (_gate)
        {
            if (!_entries.TryGetValue(key, out var entry) || entry.LockToken != lockToken)
            {
                return ValueTask.FromResult(false);
            }

            // A result already stored under this token is this holder's own (a retry whose first reply was lost): kept.
            if (entry.Result is not null)
            {
                return ValueTask.FromResult(true);
            }

            _entries[key] = entry with { ExpiresAt = now + ttl, Result = result.ToArray() };
            return ValueTask.FromResult(true);
        }
    }

    /// <inheritdoc />
    public ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        lock (_gate)
        {
            if (!_entries.TryGetValue(key, out var entry) || entry.Result is not null || entry.LockToken != lockToken)
            {
                return ValueTask.FromResult(false);
            }

            _entries.Remove(key);
            return ValueTask.FromResult(true);
        }
    }

    /// <inheritdoc />
    public ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(lockTtl, TimeSpan.Zero);
        var now = _timeProvider.GetUtcNow();
        lock (_gate)
        {
            if (!_entries.TryGetValue(key, out var entry) || entry.Result is not null || entry.LockToken != lockToken)
            {
                return ValueTask.FromResult(false);
            }

            _entries[key] = entry with { ExpiresAt = now + lockTtl };
            return ValueTask.FromResult(true);
        }
    }

    private void SweepIfLarge(DateTimeOffset now)
    {
        if (_entries.Count < _sweepAt)
        {
            return;
        }

        // An expired lock nobody took is still its holder's (the store contract): swept only a day past its expiry.
        var abandoned = now - IdempotentCompletion.AbandonedLockGrace;
        foreach (var expired in _entries.Where(e => e.Value.ExpiresAt <= (e.Value.Result is null ? abandoned : now)).Select(e => e.Key).ToList())
        {
            _entries.Remove(expired);
        }

        // Sweep again when the live entries have doubled, so sweeping stays amortized O(1) per acquire.
        _sweepAt = Math.Max(1024, _entries.Count * 2);
    }

    private sealed record Entry(Guid LockToken, DateTimeOffset ExpiresAt, byte[]? Result);
}
