using Herald.Reliability.Idempotency;
using Herald.Conformance;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Redis.Tests;

/// <summary><see cref="IdempotencyService"/> end to end over Redis, on one node and across two (two hosts, two connections).</summary>
public sealed class IdempotencyOverRedisTests(RedisFixture redis) : IClassFixture<RedisFixture>
{
    private static readonly TimeSpan Ttl = TimeSpan.FromMinutes(10);

    [Fact]
    public async Task TwentyConcurrentCallers_WithOneKey_RunTheOperationOnce_AndAllGetItsResult()
    {
        await using var host = await TestHost.StartAsync(redis);
        var service = host.Services.GetRequiredService<IdempotencyService>();
        var key = "order-" + Guid.NewGuid().ToString("N");
        var runs = 0;
        var arrived = 0;
        async ValueTask<Receipt> Charge(CancellationToken _)
        {
            Interlocked.Increment(ref runs);
            await Eventually.UntilAsync(() => Volatile.Read(ref arrived) == 20, "all 20 callers arrived");
            return new Receipt(42, "EUR", [1.5m, 2m]);
        }

        var callers = Enumerable.Range(0, 20).Select(_ => Task.Run(async () =>
        {
            Interlocked.Increment(ref arrived);
            return await service.ExecuteAsync(key, Charge, Ttl);
        }));
        var receipts = await Task.WhenAll(callers).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(1, runs);
        Assert.All(receipts, r =>
        {
            Assert.Equal(42, r.Number);
            Assert.Equal("EUR", r.Currency);
            Assert.Equal([1.5m, 2m], r.Amounts);
        });
        Assert.Equal(42, (await service.ExecuteAsync(key, Charge, Ttl)).Number);
        Assert.Equal(1, runs);
    }

    [Fact]
    public async Task ConcurrentCallers_OnTwoNodes_RunTheOperationOnce_AndAllGetItsResult()
    {
        await using var nodeA = await TestHost.StartAsync(redis);
        await using var nodeB = await TestHost.StartAsync(redis);
        var services = new[] { nodeA, nodeB }.Select(h => h.Services.GetRequiredService<IdempotencyService>()).ToList();
        var key = "payment-" + Guid.NewGuid().ToString("N");
        var runs = 0;
        var arrived = 0;
        async ValueTask<int> Pay(CancellationToken _)
        {
            var run = Interlocked.Increment(ref runs);
            await Eventually.UntilAsync(() => Volatile.Read(ref arrived) == 20, "all 20 callers arrived");
            return 1000 + run;
        }

        var callers = Enumerable.Range(0, 20).Select(i => Task.Run(async () =>
        {
            Interlocked.Increment(ref arrived);
            return await services[i % 2].ExecuteAsync(key, Pay, Ttl);
        }));
        var results = await Task.WhenAll(callers).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(1, runs);
        Assert.All(results, r => Assert.Equal(1001, r));
    }

    [Fact]
    public async Task FailedOperation_ReleasesTheKey_SoTheNextCallerRunsIt()
    {
        await using var host = await TestHost.StartAsync(redis);
        var service = host.Services.GetRequiredService<IdempotencyService>();
        var store = host.Services.GetRequiredService<IIdempotencyStore>();
        var key = "refund-" + Guid.NewGuid().ToString("N");

        await Assert.ThrowsAsync<InvalidOperationException>(async () =>
            await service.ExecuteAsync<int>(key, _ => throw new InvalidOperationException("card declined"), Ttl));

        var free = await store.TryAcquireAsync(key, TimeSpan.FromSeconds(30));
        Assert.Equal(IdempotencyAcquireStatus.Acquired, free.Status);
        Assert.True(await store.ReleaseAsync(key, free.LockToken));
        Assert.Equal(7, await service.ExecuteAsync(key, _ => ValueTask.FromResult(7), Ttl));
    }

    [Fact]
    public async Task FailedOperation_OnOneNode_LetsTheCallerWaitingOnTheOtherNodeRunIt()
    {
        await using var nodeA = await TestHost.StartAsync(redis);
        await using var nodeB = await TestHost.StartAsync(redis);
        var serviceA = nodeA.Services.GetRequiredService<IdempotencyService>();
        var serviceB = nodeB.Services.GetRequiredService<IdempotencyService>();
        var key = "ship-" + Guid.NewGuid().ToString("N");
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var fail = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var runsOnB = 0;

        var onA = serviceA.ExecuteAsync<int>(key, async _ =>
        {
            entered.SetResult();
            await fail.Task;
            throw new TimeoutException("carrier did not answer");
        }, Ttl).AsTask();
        await entered.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var onB = serviceB.ExecuteAsync(key, _ => ValueTask.FromResult(Interlocked.Increment(ref runsOnB) + 10), Ttl).AsTask();

        // B cannot run while A holds the key: it polls Redis until A's lock goes.
        await Eventually.UntilAsync(async () => (await nodeB.Services.GetRequiredService<IIdempotencyStore>().TryAcquireAsync(key, Ttl)).Status == IdempotencyAcquireStatus.Locked, "A holds the key");
        Assert.False(onB.IsCompleted);
        fail.SetResult();

        await Assert.ThrowsAsync<TimeoutException>(() => onA);
        Assert.Equal(11, await onB.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(1, runsOnB);
    }

    private sealed record Receipt(int Number, string Currency, decimal[] Amounts);
}
