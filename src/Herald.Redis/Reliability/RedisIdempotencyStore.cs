using Herald.Redis.Internal;
using Herald.Reliability.Idempotency;
using StackExchange.Redis;

namespace Herald.Redis.Reliability;

/// <summary>
/// <see cref="IIdempotencyStore"/> on Redis: one hash per key (<c>{prefix}idempotency:{key}</c>) holding the lock token
/// (<c>t</c>), the logical expiry in Unix milliseconds (<c>e</c>) and, once completed, the result bytes (<c>r</c>, present
/// even when empty). Acquire, complete and release are each one Lua script, so they are atomic on the server.
/// </summary>
/// <remarks>
/// <para>
/// Expiry follows the injected <see cref="TimeProvider"/>, never the server's clock (the port's rule): the caller computes
/// "now" and the expiry from its clock, the expiry is stored in the hash, and each script compares it with the "now" passed
/// as an argument. A key whose stored expiry has passed is free, whatever Redis thinks.
/// </para>
/// <para>
/// Redis is also told to delete the key (PEXPIRE) <see cref="RedisOptions.ExpiryGrace"/> after its ttl, measured on the
/// server, purely as garbage collection so abandoned keys do not live forever. On a real clock the logical expiry always
/// comes first; with a fake clock (tests) the logical expiry governs, as long as the test takes less real time than the
/// ttl plus the grace.
/// </para>
/// <para>
/// Complete and release act only while the hash holds the caller's token and no result, so a holder whose lock expired and
/// was taken by another caller can neither store a result over nor free the new holder's key. Complete does not check the
/// lock's expiry (as in memory): a late holder may still store its result while nobody else has taken the key. A complete
/// repeated with the token that stored the result (a retry of one whose reply was lost) reports it stored and changes nothing.
/// </para>
/// <para>
/// StackExchange.Redis commands take no cancellation token: the token is honoured while connecting and before a script is
/// sent; a sent script completes or fails with the client's timeout.
/// </para>
/// </remarks>
internal sealed class RedisIdempotencyStore(RedisConnection connection, RedisOptions options, TimeProvider timeProvider) : IIdempotencyStore
{
    // KEYS[1] key; ARGV now, lock expiry, token, gc ms. Returns {0} acquired, {1, result} completed, {2} locked.
    // A live lock holding this very token is this call's own, taken by an attempt whose reply was lost: acquired again.
    private const string AcquireScript = """
        local found = redis.call('HMGET', KEYS[1], 'e', 'r', 't')
        if found[1] and tonumber(found[1]) > tonumber(ARGV[1]) and (found[2] or found[3] ~= ARGV[3]) then
          if found[2] then return {1, found[2]} end
          return {2}
        end
        redis.call('DEL', KEYS[1])
        redis.call('HSET', KEYS[1], 't', ARGV[3], 'e', ARGV[2])
        redis.call('PEXPIRE', KEYS[1], ARGV[4])
        return {0}
        """;

    // KEYS[1] key; ARGV token, result expiry, result, gc ms. Returns 1 stored, 0 not the holder.
    // A result already stored with this very token is this call's own, stored by an attempt whose reply was lost: stored
    // (kept as it is), not "not the holder", which told the caller its lock was lost.
    private const string CompleteScript = """
        local found = redis.call('HMGET', KEYS[1], 't', 'r')
        if found[1] ~= ARGV[1] then return 0 end
        if found[2] then return 1 end
        redis.call('HSET', KEYS[1], 'e', ARGV[2], 'r', ARGV[3])
        redis.call('PEXPIRE', KEYS[1], ARGV[4])
        return 1
        """;

    // KEYS[1] key; ARGV token. Returns 1 freed, 0 not the holder.
    private const string ReleaseScript = """
        local found = redis.call('HMGET', KEYS[1], 't', 'r')
        if found[1] ~= ARGV[1] or found[2] then return 0 end
        redis.call('DEL', KEYS[1])
        return 1
        """;

    // KEYS[1] key; ARGV token, lock expiry, gc ms. Returns 1 extended, 0 not the holder.
    private const string RenewScript = """
        local found = redis.call('HMGET', KEYS[1], 't', 'r')
        if found[1] ~= ARGV[1] or found[2] then return 0 end
        redis.call('HSET', KEYS[1], 'e', ARGV[2])
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        return 1
        """;

    private readonly RedisConnection _connection = connection ?? throw new ArgumentNullException(nameof(connection));
    private readonly TimeProvider _timeProvider = timeProvider ?? throw new ArgumentNullException(nameof(timeProvider));
    private readonly string _prefix = (options ?? throw new ArgumentNullException(nameof(options))).KeyPrefix + "idempotency:";
    private readonly TimeSpan _grace = options.ExpiryGrace;

    public async ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(lockTtl, TimeSpan.Zero);
        var database = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        var now = _timeProvider.GetUtcNow();
        var token = Guid.NewGuid();
        RedisKey[] keys = [RedisKeys.Build(_prefix, key)];
        RedisValue[] values = [now.ToUnixTimeMilliseconds(), (now + lockTtl).ToUnixTimeMilliseconds(), token.ToString("N"), GarbageCollectionMilliseconds(lockTtl)];

        // Run again when cut: the script may have taken the lock with its reply lost, and unless run again with the same
        // token (which it takes as ours), that lock would block every caller, this one's own retries included, as "locked"
        // for the whole ttl.
        var found = await RedisScripts.EvaluateAgainIfCutAsync(database, AcquireScript, keys, values).ConfigureAwait(false);

        return (int)found[0] switch
        {
            0 => IdempotencyAcquireResult.Acquired(token),
            1 => IdempotencyAcquireResult.Completed((byte[]?)found[1] ?? []),
            _ => IdempotencyAcquireResult.Locked,
        };
    }

    public async ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(ttl, TimeSpan.Zero);
        var database = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        var expiresAt = _timeProvider.GetUtcNow() + ttl;
        var stored = await database.ScriptEvaluateAsync(
            CompleteScript,
            [RedisKeys.Build(_prefix, key)],
            [lockToken.ToString("N"), expiresAt.ToUnixTimeMilliseconds(), result, GarbageCollectionMilliseconds(ttl)]).ConfigureAwait(false);
        return (int)stored == 1;
    }

    public async ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        var database = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        var released = await database.ScriptEvaluateAsync(ReleaseScript, [RedisKeys.Build(_prefix, key)], [lockToken.ToString("N")]).ConfigureAwait(false);
        return (int)released == 1;
    }

    public async ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(lockTtl, TimeSpan.Zero);
        var database = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        var expiresAt = _timeProvider.GetUtcNow() + lockTtl;
        var renewed = await database.ScriptEvaluateAsync(
            RenewScript,
            [RedisKeys.Build(_prefix, key)],
            [lockToken.ToString("N"), expiresAt.ToUnixTimeMilliseconds(), GarbageCollectionMilliseconds(lockTtl)]).ConfigureAwait(false);
        return (int)renewed == 1;
    }

    private long GarbageCollectionMilliseconds(TimeSpan ttl) => (long)Math.Ceiling((ttl + _grace).TotalMilliseconds);
}
