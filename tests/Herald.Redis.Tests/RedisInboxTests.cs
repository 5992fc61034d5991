using Herald.Conformance;
using Herald.Redis.Internal;
using Herald.Redis.Reliability;
using Herald.Redis.Tests.Faults;
using Herald.Reliability;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;
using StackExchange.Redis;

namespace Herald.Redis.Tests;

/// <summary>
/// The inbox's unit-of-work behaviour on Redis (which is not the handler's database): a mark is pending until the unit of
/// work commits, a duplicate waits for the outcome, and a mark whose process died lapses. Plus two nodes and expiry.
/// </summary>
public sealed class RedisInboxTests(RedisFixture redis) : IClassFixture<RedisFixture>
{
    private static readonly TimeSpan Window = TimeSpan.FromMinutes(10);
    private static readonly TimeSpan PendingTimeout = TimeSpan.FromSeconds(30);
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero));
    private readonly FakeLogger<RedisInbox> _logger = new();
    private readonly string _endpoint = "inbox-" + Guid.NewGuid().ToString("N");

    [Fact]
    public async Task PendingMark_DoesNotCountAsHandled_UntilItsUnitOfWorkCommits()
    {
        var inbox = Inbox();
        var id = Guid.CreateVersion7();
        var unitOfWork = redis.BeginUnitOfWork();

        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, unitOfWork));
        Assert.False(await inbox.IsHandledAsync(_endpoint, id));

        await unitOfWork.CommitAsync();
        Assert.True(await inbox.IsHandledAsync(_endpoint, id));
    }

    [Fact]
    public async Task Duplicate_WhileTheFirstUnitOfWorkIsOpen_WaitsForIt_AndIsSkippedAfterItCommits()
    {
        var inbox = Inbox();
        var id = Guid.CreateVersion7();
        var first = redis.BeginUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, first));

        var duplicate = inbox.TryMarkHandledAsync(_endpoint, id, Window, redis.BeginUnitOfWork()).AsTask();
        await WaitUntilWaitingAsync();
        Assert.False(duplicate.IsCompleted);

        await first.CommitAsync();
        Assert.False(await RunClockUntilDoneAsync(duplicate));
    }

    [Fact]
    public async Task Duplicate_WhileTheFirstUnitOfWorkIsOpen_RunsAfterItRollsBack()
    {
        var inbox = Inbox();
        var id = Guid.CreateVersion7();
        var first = redis.BeginUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, first));

        var retry = redis.BeginUnitOfWork();
        var duplicate = inbox.TryMarkHandledAsync(_endpoint, id, Window, retry).AsTask();
        await WaitUntilWaitingAsync();
        Assert.False(duplicate.IsCompleted);

        await first.RollbackAsync();
        Assert.True(await RunClockUntilDoneAsync(duplicate));
        await retry.CommitAsync();
        Assert.True(await inbox.IsHandledAsync(_endpoint, id));
    }

    [Fact]
    public async Task PendingMark_OfAProcessThatDied_LapsesAfterThePendingTimeout_SoTheRedeliveryRuns()
    {
        // The crashed process's clock stands still: its timers, which would renew the pending mark, never fire again.
        var crashed = Inbox(clock: new FakeTimeProvider(_clock.GetUtcNow()));
        var survivor = Inbox(await redis.ConnectAsync());
        var id = Guid.CreateVersion7();
        Assert.True(await crashed.TryMarkHandledAsync(_endpoint, id, Window, redis.BeginUnitOfWork()));

        var redelivery = survivor.TryMarkHandledAsync(_endpoint, id, Window, redis.BeginUnitOfWork()).AsTask();
        await WaitUntilWaitingAsync();
        Assert.False(redelivery.IsCompleted);

        Assert.True(await RunClockUntilDoneAsync(redelivery, step: TimeSpan.FromSeconds(5)));
        Assert.True(_clock.GetUtcNow() >= new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero) + PendingTimeout);
    }

    [Fact]
    public async Task PendingMark_OfAUnitOfWorkOpenLongerThanThePendingTimeout_IsRenewed_SoTheDuplicateKeepsWaiting()
    {
        // Issue 10: the pending mark lapsed under a long handler, and a duplicate ran the handler a second time.
        var inbox = Inbox();
        var id = Guid.CreateVersion7();
        var first = redis.BeginUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, first));
        var duplicate = Inbox(await redis.ConnectAsync()).TryMarkHandledAsync(_endpoint, id, Window, redis.BeginUnitOfWork()).AsTask();
        await WaitUntilWaitingAsync();

        // Three pending timeouts, a renewal period at a time.
        for (var step = 0; step < 9; step++)
        {
            await AdvanceARenewalAsync(MarkKey(id));
            Assert.False(duplicate.IsCompleted, "the duplicate stopped waiting for a mark whose unit of work is open");
        }

        await first.CommitAsync();
        Assert.False(await RunClockUntilDoneAsync(duplicate));
    }

    [Fact]
    public async Task PendingMark_RenewedAfterTheIndexExpired_StillHoldsTheId_AndCommits()
    {
        // The index only lists marks for DeleteExpiredAsync, and a renewal does not extend its PEXPIRE, so Redis may drop it
        // under a long handler. Nothing else reads it: each mark holds its own expiry, and the cleanup checks it.
        var inbox = Inbox();
        var id = Guid.CreateVersion7();
        var first = redis.BeginUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, first));
        var database = redis.Multiplexer.GetDatabase();
        var index = RedisKeys.Build(redis.KeyPrefix + "{inbox}:", "expiries");
        Assert.True(await database.KeyDeleteAsync(index));

        for (var step = 0; step < 4; step++)
        {
            await AdvanceARenewalAsync(MarkKey(id));
        }

        Assert.Equal(0, await inbox.DeleteExpiredAsync(100));
        var duplicate = Inbox(await redis.ConnectAsync()).TryMarkHandledAsync(_endpoint, id, Window, redis.BeginUnitOfWork()).AsTask();
        await WaitUntilWaitingAsync();
        await first.CommitAsync();

        Assert.False(await RunClockUntilDoneAsync(duplicate));
        Assert.True(await inbox.IsHandledAsync(_endpoint, id));
        Assert.NotNull(await database.KeyTimeToLiveAsync(index));
    }

    [Fact]
    public async Task PendingMark_AnotherHolderTook_IsReportedLost_AndItsCommitLeavesTheOtherHoldersMark()
    {
        var inbox = Inbox();
        var id = Guid.CreateVersion7();
        var first = redis.BeginUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, first));

        // What another unit of work's mark writes after this one lapsed: its own token.
        await redis.Multiplexer.GetDatabase().HashSetAsync(MarkKey(id), "t", "another unit of work");
        _clock.Advance(PendingTimeout / 3);

        await Eventually.UntilAsync(() => _logger.Collector.GetSnapshot().Any(r => r.Id.Id == 12013), "the lost mark is logged");
        await first.CommitAsync();
        Assert.Equal("another unit of work", (string?)await redis.Multiplexer.GetDatabase().HashGetAsync(MarkKey(id), "t"));
        Assert.False(await inbox.IsHandledAsync(_endpoint, id));
    }

    [Fact]
    public async Task Duplicate_WaitingForAPendingMark_StopsWhenCancelled()
    {
        var inbox = Inbox();
        var id = Guid.CreateVersion7();
        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, redis.BeginUnitOfWork()));
        using var cancellation = new CancellationTokenSource();

        var duplicate = inbox.TryMarkHandledAsync(_endpoint, id, Window, redis.BeginUnitOfWork(), cancellation.Token).AsTask();
        await WaitUntilWaitingAsync();
        await cancellation.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => duplicate.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task CommittedMark_LastsTheWholeWindow_NotJustThePendingTimeout()
    {
        var inbox = Inbox();
        var id = Guid.CreateVersion7();
        var unitOfWork = redis.BeginUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, unitOfWork));
        await unitOfWork.CommitAsync();

        _clock.Advance(Window - TimeSpan.FromSeconds(1));
        Assert.True(await inbox.IsHandledAsync(_endpoint, id));
        Assert.False(await inbox.TryMarkHandledAsync(_endpoint, id, Window));

        _clock.Advance(TimeSpan.FromSeconds(2));
        Assert.False(await inbox.IsHandledAsync(_endpoint, id));
    }

    [Fact]
    public async Task StaleUnitOfWork_RollingBackAfterItsMarkLapsed_LeavesTheNewHoldersMark()
    {
        var inbox = Inbox();
        var id = Guid.CreateVersion7();
        var stale = redis.BeginUnitOfWork();

        // The stale unit of work's process stalls (its clock stands still): nothing renews its pending mark.
        Assert.True(await Inbox(clock: new FakeTimeProvider(_clock.GetUtcNow())).TryMarkHandledAsync(_endpoint, id, Window, stale));
        _clock.Advance(PendingTimeout + TimeSpan.FromSeconds(1));
        var current = redis.BeginUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window, current));

        await stale.RollbackAsync();
        await current.CommitAsync();

        Assert.True(await inbox.IsHandledAsync(_endpoint, id));
        Assert.False(await inbox.TryMarkHandledAsync(_endpoint, id, Window));
    }

    [Fact]
    public async Task ConcurrentMarks_FromTwoNodes_ExactlyOneWins()
    {
        var nodeA = Inbox(await redis.ConnectAsync());
        var nodeB = Inbox(await redis.ConnectAsync());
        var id = Guid.CreateVersion7();

        var results = await Task.WhenAll(Enumerable.Range(0, 32).Select(i =>
            Task.Run(async () => await (i % 2 == 0 ? nodeA : nodeB).TryMarkHandledAsync(_endpoint, id, Window))));

        Assert.Equal(1, results.Count(r => r));
    }

    [Fact]
    public async Task Marks_ExpireOnTheInjectedClock_WhileRedisKeepsThemForTheWindowPlusTheGrace()
    {
        var inbox = Inbox();
        var id = Guid.CreateVersion7();
        var database = redis.Multiplexer.GetDatabase();
        var key = RedisKeys.Build(redis.KeyPrefix + "{inbox}:", _endpoint, ":" + id.ToString("N"));

        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window));
        var ttl = await database.KeyTimeToLiveAsync(key);
        Assert.NotNull(ttl);
        Assert.InRange(ttl.Value, Window + TimeSpan.FromMinutes(5) - TimeSpan.FromSeconds(10), Window + TimeSpan.FromMinutes(5));

        _clock.Advance(Window + TimeSpan.FromSeconds(1));

        Assert.True(await database.KeyExistsAsync(key), "Redis still holds the mark: its own expiry is only garbage collection");
        Assert.False(await inbox.IsHandledAsync(_endpoint, id));
        Assert.True(await inbox.TryMarkHandledAsync(_endpoint, id, Window));
    }

    [Fact]
    public async Task PendingMark_WhoseReplyWasLost_IsRemovedByTheRollback_SoTheRetryDoesNotWaitForIt()
    {
        // The mark script runs on the server but the connection drops before its reply: the attempt fails and rolls back.
        var lossy = LostReplies.Wrap(redis.Multiplexer);
        var inbox = Inbox(lossy.Multiplexer);
        var id = Guid.CreateVersion7();
        var first = redis.BeginUnitOfWork();
        lossy.LoseNextReply = true;
        await Assert.ThrowsAsync<RedisConnectionException>(() => inbox.TryMarkHandledAsync(_endpoint, id, Window, first).AsTask());
        await first.RollbackAsync();

        // The clock stands still, so a pending mark left behind would hold the retry off for ever.
        var retry = inbox.TryMarkHandledAsync(_endpoint, id, Window, redis.BeginUnitOfWork()).AsTask();
        Assert.True(await retry.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    private RedisInbox Inbox(IConnectionMultiplexer? multiplexer = null, TimeProvider? clock = null)
    {
        var options = redis.Options(multiplexer, o => o.InboxPendingTimeout = PendingTimeout);
        return new RedisInbox(RedisConnection.Create(options), options, clock ?? _clock, _logger);
    }

    /// <summary>
    /// Advances the clock by a renewal period and waits until the pending mark's renewal landed in Redis. The renewal loop
    /// schedules its next wait only once the previous write returned; on a loaded machine the test can see that write in
    /// Redis and advance before the loop scheduled it, so the wait falls due a period later. While waiting, the clock is
    /// moved on in small steps, by at most another period: the mark (renewed a whole pending timeout ahead) cannot lapse.
    /// </summary>
    private async Task AdvanceARenewalAsync(RedisKey key)
    {
        var period = PendingTimeout / 3;
        var renewedTo = (_clock.GetUtcNow() + period + PendingTimeout).ToUnixTimeMilliseconds();
        _clock.Advance(period);
        var database = redis.Multiplexer.GetDatabase();
        var step = period / 20;
        var extra = TimeSpan.Zero;
        await Eventually.UntilAsync(
            async () =>
            {
                if ((long)await database.HashGetAsync(key, "e") >= renewedTo)
                {
                    return true;
                }

                if (extra < period)
                {
                    _clock.Advance(step);
                    extra += step;
                }

                return false;
            },
            "the pending mark is renewed");
    }

    private RedisKey MarkKey(Guid id) => RedisKeys.Build(redis.KeyPrefix + "{inbox}:", _endpoint, ":" + id.ToString("N"));

    private Task WaitUntilWaitingAsync() =>
        Eventually.UntilAsync(() => _logger.Collector.GetSnapshot().Any(r => r.Id.Id == 12010), "the duplicate waits for the pending mark");

    /// <summary>Moves the fake clock (which drives the waiter's polling) until the task is done.</summary>
    private async Task<bool> RunClockUntilDoneAsync(Task<bool> task, TimeSpan? step = null)
    {
        await Eventually.UntilAsync(
            () =>
            {
                if (task.IsCompleted)
                {
                    return true;
                }

                _clock.Advance(step ?? TimeSpan.FromMilliseconds(100));
                return false;
            },
            "the waiting mark finishes");
        return await task;
    }
}
