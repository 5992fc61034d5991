using Herald.Conformance;
using Herald.Redis.Internal;
using Herald.Redis.Reliability;
using Herald.Reliability.Idempotency;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using StackExchange.Redis;

namespace Herald.Redis.Tests.Faults;

/// <summary>
/// The Redis stores' connection cut mid-work (<c>CLIENT KILL ID</c> of this test's own sockets, as a failover, a proxy
/// restart or an idle timeout would): inbox marks and idempotency keys keep their promises, and the next call works on the
/// reconnected multiplexer without a restart.
/// </summary>
public sealed class KilledConnectionTests(RedisFixture redis) : IClassFixture<RedisFixture>
{
    private static readonly TimeSpan Window = TimeSpan.FromMinutes(10);
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(15);
    private readonly FakeLogger<RedisInbox> _logger = new();
    private readonly string _endpoint = "kill-" + Guid.NewGuid().ToString("N")[..8];

    [Fact]
    public async Task ConnectionKilled_WhileTheCommittedMarkIsMadeFinal_TheRedeliveryIsStillSkipped()
    {
        await using var killable = await KillableConnection.ConnectAsync(redis.Multiplexer);
        var inbox = Inbox(killable.Multiplexer, TimeSpan.FromSeconds(3));
        var id = Guid.CreateVersion7();
        var attempt = redis.BeginUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, attempt));

        // The handler's writes commit; the script making the mark final is written, and the socket is cut before its reply.
        killable.Park();
        var commit = attempt.CommitAsync().AsTask();
        await killable.WaitUntilQueuedBehindParkAsync();
        await killable.KillAsync();
        await commit.WaitAsync(Deadline);

        // The broker redelivers (its ack was lost too): the message was handled and committed, so it is a duplicate, even
        // once the pending mark's timeout has passed.
        var redelivery = inbox.TryMarkHandledAsync(_endpoint, id, Window, redis.BeginUnitOfWork()).AsTask();
        Assert.False(await redelivery.WaitAsync(Deadline), "the committed message's redelivery ran its handler again");
        Assert.True(await inbox.IsHandledAsync(_endpoint, id));
    }

    [Fact]
    public async Task ConnectionKilled_WhileTheMarkOfAFailedAttemptIsRemoved_TheRetryDoesNotWaitForIt()
    {
        // The clock stands still: a pending mark left behind would hold the retry off for ever.
        await using var killable = await KillableConnection.ConnectAsync(redis.Multiplexer);
        var inbox = Inbox(killable.Multiplexer, TimeSpan.FromSeconds(30), new FakeTimeProvider(DateTimeOffset.UtcNow));
        var id = Guid.CreateVersion7();
        var attempt = redis.BeginUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, attempt));

        killable.Park();
        var rollback = attempt.RollbackAsync().AsTask();
        await killable.WaitUntilQueuedBehindParkAsync();
        await killable.KillAsync();
        await rollback.WaitAsync(Deadline);

        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, redis.BeginUnitOfWork()).AsTask().WaitAsync(Deadline));
    }

    [Fact]
    public async Task ConnectionKilled_WhileAHandlerOutlastsThePendingTimeout_ADuplicateWaits_AndIsSkippedAfterTheCommit()
    {
        // Longer than the multiplexer takes to notice the cut and reconnect (its heartbeat is a second).
        var pendingTimeout = TimeSpan.FromSeconds(3);
        await using var killable = await KillableConnection.ConnectAsync(redis.Multiplexer);
        var inbox = Inbox(killable.Multiplexer, pendingTimeout);
        var id = Guid.CreateVersion7();
        var attempt = redis.BeginUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, attempt));

        // The handler runs on; its connection is cut, then a duplicate arrives at another node.
        await killable.KillAsync();
        var duplicate = Inbox(await redis.ConnectAsync(), pendingTimeout).TryMarkHandledAsync(_endpoint, id, Window, redis.BeginUnitOfWork()).AsTask();
        await OutlastAsync(MarkKey(id), pendingTimeout);
        Assert.False(duplicate.IsCompleted, "a duplicate ran beside the handler");

        await attempt.CommitAsync();
        Assert.False(await duplicate.WaitAsync(Deadline), "the duplicate ran after the first attempt committed");
        Assert.True(await inbox.IsHandledAsync(_endpoint, id), "the inbox works on the reconnected multiplexer");
        Assert.DoesNotContain(_logger.Collector.GetSnapshot(), r => r.Id.Id is 12011 or 12013 or 12015);
    }

    [Fact]
    public async Task ConnectionKilled_WhileTheResultIsStored_TheCallerGetsIt_AndARetryReplaysIt()
    {
        await using var killable = await KillableConnection.ConnectAsync(redis.Multiplexer);
        var service = Service(killable.Multiplexer, TimeSpan.FromSeconds(30));
        var key = "kill-" + Guid.NewGuid().ToString("N");
        var runs = 0;

        var first = service.ExecuteAsync(key, _ =>
        {
            Interlocked.Increment(ref runs);
            killable.Park();
            return ValueTask.FromResult(42);
        }, Window).AsTask();
        await killable.WaitUntilQueuedBehindParkAsync();
        await killable.KillAsync();

        Assert.Equal(42, await first.WaitAsync(Deadline));
        Assert.Equal(42, await Service(await redis.ConnectAsync(), TimeSpan.FromSeconds(30))
            .ExecuteAsync(key, _ => ValueTask.FromResult(Interlocked.Increment(ref runs) + 100), Window).AsTask().WaitAsync(Deadline));
        Assert.Equal(1, runs);
    }

    [Fact]
    public async Task ConnectionKilled_WhileAnOperationOutlastsTheLockTimeout_AConcurrentCallerWaits_AndGetsItsResult()
    {
        var lockTimeout = TimeSpan.FromSeconds(3);
        await using var killable = await KillableConnection.ConnectAsync(redis.Multiplexer);
        var key = "kill-" + Guid.NewGuid().ToString("N");
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var runs = 0;

        var first = Service(killable.Multiplexer, lockTimeout).ExecuteAsync(key, async _ =>
        {
            Interlocked.Increment(ref runs);
            entered.SetResult();
            await release.Task;
            return 7;
        }, Window).AsTask();
        await entered.Task.WaitAsync(Deadline);
        await killable.KillAsync();

        var second = Service(await redis.ConnectAsync(), lockTimeout)
            .ExecuteAsync(key, _ => ValueTask.FromResult(Interlocked.Increment(ref runs) + 100), Window).AsTask();
        await OutlastAsync(RedisKeys.Build(redis.KeyPrefix + "idempotency:", key), lockTimeout);
        Assert.False(second.IsCompleted, "a concurrent caller ran beside the operation");

        release.SetResult();
        Assert.Equal(7, await first.WaitAsync(Deadline));
        Assert.Equal(7, await second.WaitAsync(Deadline));
        Assert.Equal(1, runs);
    }

    [Fact]
    public async Task ConnectionKilled_WhileAFailedOperationReleasesItsLock_TheCallerGetsItsException_AndTheNextCallerRuns()
    {
        var lockTimeout = TimeSpan.FromSeconds(1);
        await using var killable = await KillableConnection.ConnectAsync(redis.Multiplexer);
        var service = Service(killable.Multiplexer, lockTimeout);
        var key = "kill-" + Guid.NewGuid().ToString("N");

        var first = service.ExecuteAsync<int>(key, _ =>
        {
            killable.Park();
            throw new InvalidOperationException("declined");
        }, Window).AsTask();
        await killable.WaitUntilQueuedBehindParkAsync();
        await killable.KillAsync();

        Assert.Equal("declined", (await Assert.ThrowsAsync<InvalidOperationException>(() => first.WaitAsync(Deadline))).Message);
        Assert.Equal(5, await service.ExecuteAsync(key, _ => ValueTask.FromResult(5), Window).AsTask().WaitAsync(Deadline));
    }

    /// <summary>Waits until the lease at <paramref name="key"/> was renewed past its first time to live (and then some).</summary>
    private async Task OutlastAsync(RedisKey key, TimeSpan ttl)
    {
        var database = redis.Multiplexer.GetDatabase();
        var first = (long)await database.HashGetAsync(key, "e");
        var target = first + (long)(ttl * 1.5).TotalMilliseconds;
        await Eventually.UntilAsync(async () => (long)await database.HashGetAsync(key, "e") >= target, "the lease is renewed past its first ttl", TimeSpan.FromSeconds(20));
    }

    private RedisKey MarkKey(Guid id) => RedisKeys.Build(redis.KeyPrefix + "{inbox}:", _endpoint, ":" + id.ToString("N"));

    private RedisInbox Inbox(IConnectionMultiplexer multiplexer, TimeSpan pendingTimeout, TimeProvider? clock = null)
    {
        var options = redis.Options(multiplexer, o => o.InboxPendingTimeout = pendingTimeout);
        return new RedisInbox(RedisConnection.Create(options), options, clock ?? TimeProvider.System, _logger);
    }

    private IdempotencyService Service(IConnectionMultiplexer multiplexer, TimeSpan lockTimeout)
    {
        var options = redis.Options(multiplexer);
        return new IdempotencyService(
            new RedisIdempotencyStore(RedisConnection.Create(options), options, TimeProvider.System),
            TimeProvider.System,
            Options.Create(new IdempotencyOptions { LockTimeout = lockTimeout }));
    }
}
