using Herald.Conformance.Reliability;
using Herald.Persistence;
using Herald.Redis.Internal;
using Herald.Redis.Reliability;
using Herald.Reliability;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;

namespace Herald.Redis.Tests;

public sealed class RedisIdempotencyStoreConformanceTests(RedisFixture redis) : IdempotencyStoreConformance, IClassFixture<RedisFixture>
{
    protected override ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(new RedisIdempotencyStore(RedisConnection.Create(redis.Options()), redis.Options(), timeProvider));

    protected override ValueTask<(IIdempotencyStore Store, IAsyncDisposable? Owner)> OpenSecondStoreAsync(IIdempotencyStore first, TimeProvider timeProvider)
    {
        // Its own multiplexer, as a second process has.
        var connection = RedisConnection.Create(redis.Options());
        return ValueTask.FromResult<(IIdempotencyStore, IAsyncDisposable?)>((new RedisIdempotencyStore(connection, redis.Options(), timeProvider), connection));
    }
}

public sealed class RedisInboxConformanceTests(RedisFixture redis) : InboxConformance, IClassFixture<RedisFixture>
{
    protected override ValueTask<IInbox> CreateInboxAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IInbox>(new RedisInbox(RedisConnection.Create(redis.Options()), redis.Options(), timeProvider));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IInbox inbox) => ValueTask.FromResult(redis.BeginUnitOfWork());
}
