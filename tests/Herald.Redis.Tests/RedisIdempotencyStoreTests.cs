using Herald.Redis.Internal;
using Herald.Redis.Reliability;
using Herald.Redis.Tests.Faults;
using Herald.Reliability.Idempotency;
using Microsoft.Extensions.Time.Testing;
using StackExchange.Redis;

namespace Herald.Redis.Tests;

/// <summary>What the conformance suite does not cover: two nodes on one key, Redis's own expiry as garbage collection, ordinal keys.</summary>
public sealed class RedisIdempotencyStoreTests(RedisFixture redis) : IClassFixture<RedisFixture>
{
    private static readonly TimeSpan LockTtl = TimeSpan.FromSeconds(30);
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero));

    [Fact]
    public async Task ConcurrentAcquires_FromTwoNodes_ExactlyOneWins()
    {
        var nodeA = await StoreAsync(await redis.ConnectAsync());
        var nodeB = await StoreAsync(await redis.ConnectAsync());
        var key = NewKey();

        var results = await Task.WhenAll(Enumerable.Range(0, 32).Select(i =>
            Task.Run(async () => await (i % 2 == 0 ? nodeA : nodeB).TryAcquireAsync(key, LockTtl))));

        Assert.Equal(1, results.Count(r => r.Status == IdempotencyAcquireStatus.Acquired));
        Assert.Equal(31, results.Count(r => r.Status == IdempotencyAcquireStatus.Locked));
    }

    [Fact]
    public async Task AHolderWhoseLockExpired_CannotCompleteOrRelease_TheKeyAnotherNodeTook()
    {
        var nodeA = await StoreAsync(await redis.ConnectAsync());
        var nodeB = await StoreAsync(await redis.ConnectAsync());
        var key = NewKey();
        var stale = await nodeA.TryAcquireAsync(key, LockTtl);
        _clock.Advance(LockTtl + TimeSpan.FromSeconds(1));
        var current = await nodeB.TryAcquireAsync(key, LockTtl);
        Assert.Equal(IdempotencyAcquireStatus.Acquired, current.Status);

        Assert.False(await nodeA.CompleteAsync(key, stale.LockToken, new byte[] { 1 }, TimeSpan.FromHours(1)));
        Assert.False(await nodeA.ReleaseAsync(key, stale.LockToken));
        Assert.Equal(IdempotencyAcquireStatus.Locked, (await nodeA.TryAcquireAsync(key, LockTtl)).Status);

        Assert.True(await nodeB.CompleteAsync(key, current.LockToken, new byte[] { 2 }, TimeSpan.FromHours(1)));
        Assert.Equal(new byte[] { 2 }, (await nodeA.TryAcquireAsync(key, LockTtl)).Result.ToArray());
    }

    [Fact]
    public async Task AnAcquireWhoseReplyWasLost_IsRetriedWithItsToken_SoTheCallerHoldsTheLockInsteadOfFindingItLocked()
    {
        // The acquire script runs on the server but the connection drops before its reply (a failover, say).
        var lossy = LostReplies.Wrap(await redis.ConnectAsync());
        var store = await StoreAsync(lossy.Multiplexer);
        var key = NewKey();
        lossy.LoseNextReply = true;

        var found = await store.TryAcquireAsync(key, LockTtl);

        Assert.Equal(IdempotencyAcquireStatus.Acquired, found.Status);
        Assert.True(await store.CompleteAsync(key, found.LockToken, new byte[] { 7 }, TimeSpan.FromHours(1)));
        Assert.Equal(new byte[] { 7 }, (await store.TryAcquireAsync(key, LockTtl)).Result.ToArray());
    }

    [Fact]
    public async Task ACompleteWhoseReplyWasLost_TriedAgainWithItsToken_ReportsTheResultStored()
    {
        // The complete script stores the result on the server but the connection drops before its reply: the holder tries
        // again with its token, and must hear "stored", not "no longer the holder, nothing stored" (the port's contract).
        var lossy = LostReplies.Wrap(await redis.ConnectAsync());
        var store = await StoreAsync(lossy.Multiplexer);
        var key = NewKey();
        var acquired = await store.TryAcquireAsync(key, LockTtl);
        lossy.LoseNextReply = true;

        await Assert.ThrowsAsync<RedisConnectionException>(async () => await store.CompleteAsync(key, acquired.LockToken, new byte[] { 5 }, TimeSpan.FromHours(1)));

        Assert.True(await store.CompleteAsync(key, acquired.LockToken, new byte[] { 5 }, TimeSpan.FromHours(1)));
        Assert.Equal(new byte[] { 5 }, (await store.TryAcquireAsync(key, LockTtl)).Result.ToArray());
    }

    [Fact]
    public async Task ACompletionWhoseReplyWasLost_IsReportedStoredByTheRetryingCompletion()
    {
        // IdempotentCompletion (the idempotency service and the HTTP endpoints) renews the lock, then completes again.
        var lossy = LostReplies.Wrap(await redis.ConnectAsync());
        var store = await StoreAsync(lossy.Multiplexer);
        var key = NewKey();
        var acquired = await store.TryAcquireAsync(key, LockTtl);
        lossy.LoseNextReply = true;

        var stored = await Herald.Internal.IdempotentCompletion.StoreAsync(
            store, key, acquired.LockToken, new byte[] { 6 }, TimeSpan.FromHours(1), LockTtl, TimeSpan.FromSeconds(30), TimeProvider.System, (_, _) => { });

        Assert.True(stored, "the result is stored under this caller's token; false tells the caller its lock was lost");
        Assert.Equal(new byte[] { 6 }, (await store.TryAcquireAsync(key, LockTtl)).Result.ToArray());
    }

    [Fact]
    public async Task Keys_ExpireOnTheInjectedClock_WhileRedisKeepsThemForTheirTtlPlusTheGrace()
    {
        var store = await StoreAsync(redis.Multiplexer, o => o.ExpiryGrace = TimeSpan.FromMinutes(5));
        var key = NewKey();
        var database = redis.Multiplexer.GetDatabase();
        var redisKey = RedisKeys.Build(redis.KeyPrefix + "idempotency:", key);

        var acquired = await store.TryAcquireAsync(key, LockTtl);
        AssertTimeToLive(await database.KeyTimeToLiveAsync(redisKey), LockTtl + TimeSpan.FromMinutes(5));
        await store.CompleteAsync(key, acquired.LockToken, new byte[] { 9 }, TimeSpan.FromHours(1));
        AssertTimeToLive(await database.KeyTimeToLiveAsync(redisKey), TimeSpan.FromHours(1) + TimeSpan.FromMinutes(5));

        _clock.Advance(TimeSpan.FromHours(1) + TimeSpan.FromSeconds(1));

        Assert.True(await database.KeyExistsAsync(redisKey), "Redis still holds the key: its own expiry is only garbage collection");
        Assert.Equal(IdempotencyAcquireStatus.Acquired, (await store.TryAcquireAsync(key, LockTtl)).Status);
    }

    [Fact]
    public async Task Release_DeletesTheKey()
    {
        var store = await StoreAsync(redis.Multiplexer);
        var key = NewKey();
        var acquired = await store.TryAcquireAsync(key, LockTtl);

        Assert.True(await store.ReleaseAsync(key, acquired.LockToken));

        Assert.False(await redis.Multiplexer.GetDatabase().KeyExistsAsync(RedisKeys.Build(redis.KeyPrefix + "idempotency:", key)));
    }

    [Fact]
    public async Task Keys_WithLoneSurrogates_StayDistinct()
    {
        var store = await StoreAsync(redis.Multiplexer);
        var key = NewKey();

        // UTF-8 would turn each lone surrogate into U+FFFD, and the three keys into one.
        foreach (var variant in new[] { key + "\uD800", key + "\uDBFF", key + "\uFFFD" })
        {
            Assert.Equal(IdempotencyAcquireStatus.Acquired, (await store.TryAcquireAsync(variant, LockTtl)).Status);
        }

        Assert.Equal(IdempotencyAcquireStatus.Locked, (await store.TryAcquireAsync(key + "\uD800", LockTtl)).Status);
    }

    private static void AssertTimeToLive(TimeSpan? actual, TimeSpan expected)
    {
        Assert.NotNull(actual);
        Assert.InRange(actual.Value, expected - TimeSpan.FromSeconds(10), expected);
    }

    private static string NewKey() => "redis-store:" + Guid.NewGuid().ToString("N");

    private Task<RedisIdempotencyStore> StoreAsync(IConnectionMultiplexer multiplexer, Action<RedisOptions>? configure = null)
    {
        var options = redis.Options(multiplexer, configure);
        return Task.FromResult(new RedisIdempotencyStore(RedisConnection.Create(options), options, _clock));
    }
}
