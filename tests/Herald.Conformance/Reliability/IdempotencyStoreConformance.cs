using System.Text;
using Herald.Reliability.Idempotency;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Herald.Conformance.Reliability;

/// <summary>
/// The contract of <see cref="IIdempotencyStore"/>. A store's test project derives from it and implements
/// <see cref="CreateStoreAsync"/> over the given clock (which the store must use for expiry). Every test uses keys of its own.
/// </summary>
public abstract partial class IdempotencyStoreConformance
{
    private static readonly TimeSpan LockTtl = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan ResultTtl = TimeSpan.FromHours(1);

    /// <summary>Creates the store under test on the given clock.</summary>
    protected abstract ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider);

    /// <summary>Moves time forward; override only if the engine expires keys by a clock of its own.</summary>
    protected virtual ValueTask AdvanceTimeAsync(FakeTimeProvider clock, TimeSpan duration)
    {
        ArgumentNullException.ThrowIfNull(clock);
        clock.Advance(duration);
        return ValueTask.CompletedTask;
    }

    /// <summary>A key no other test uses.</summary>
    protected static string UniqueKey() => "conformance:" + Guid.NewGuid().ToString("N");

    /// <summary>A clock at a fixed start.</summary>
    protected static FakeTimeProvider NewClock() => new(new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero));

    [Fact]
    public async Task Acquire_OfAFreeKey_ReturnsAcquiredWithAToken()
    {
        var store = await CreateStoreAsync(NewClock());

        var result = await store.TryAcquireAsync(UniqueKey(), LockTtl);

        Assert.Equal(IdempotencyAcquireStatus.Acquired, result.Status);
        Assert.NotEqual(Guid.Empty, result.LockToken);
    }

    [Fact]
    public async Task Acquire_WhileLocked_ReturnsLocked()
    {
        var store = await CreateStoreAsync(NewClock());
        var key = UniqueKey();
        await store.TryAcquireAsync(key, LockTtl);

        Assert.Equal(IdempotencyAcquireStatus.Locked, (await store.TryAcquireAsync(key, LockTtl)).Status);
    }

    [Fact]
    public async Task Complete_ThenAcquire_ReturnsTheResultBytes()
    {
        var store = await CreateStoreAsync(NewClock());
        var key = UniqueKey();
        var bytes = Encoding.UTF8.GetBytes("{\"orderId\":42}").Append((byte)0xFF).ToArray();
        var acquired = await store.TryAcquireAsync(key, LockTtl);

        Assert.True(await store.CompleteAsync(key, acquired.LockToken, bytes, ResultTtl));

        var again = await store.TryAcquireAsync(key, LockTtl);
        Assert.Equal(IdempotencyAcquireStatus.Completed, again.Status);
        Assert.Equal(bytes, again.Result.ToArray());
    }

    [Fact]
    public async Task Complete_WithAnEmptyResult_RoundTrips()
    {
        var store = await CreateStoreAsync(NewClock());
        var key = UniqueKey();
        var acquired = await store.TryAcquireAsync(key, LockTtl);

        await store.CompleteAsync(key, acquired.LockToken, ReadOnlyMemory<byte>.Empty, ResultTtl);

        var again = await store.TryAcquireAsync(key, LockTtl);
        Assert.Equal(IdempotencyAcquireStatus.Completed, again.Status);
        Assert.True(again.Result.IsEmpty);
    }

    [Fact]
    public async Task Release_ThenAcquire_ReturnsAcquiredAgain()
    {
        var store = await CreateStoreAsync(NewClock());
        var key = UniqueKey();
        var first = await store.TryAcquireAsync(key, LockTtl);

        Assert.True(await store.ReleaseAsync(key, first.LockToken));

        var second = await store.TryAcquireAsync(key, LockTtl);
        Assert.Equal(IdempotencyAcquireStatus.Acquired, second.Status);
        Assert.NotEqual(first.LockToken, second.LockToken);
    }

    [Fact]
    public async Task Lock_ExpiresAfterItsTtl()
    {
        var clock = NewClock();
        var store = await CreateStoreAsync(clock);
        var key = UniqueKey();
        await store.TryAcquireAsync(key, LockTtl);

        await AdvanceTimeAsync(clock, LockTtl - TimeSpan.FromSeconds(1));
        Assert.Equal(IdempotencyAcquireStatus.Locked, (await store.TryAcquireAsync(key, LockTtl)).Status);

        await AdvanceTimeAsync(clock, TimeSpan.FromSeconds(2));
        Assert.Equal(IdempotencyAcquireStatus.Acquired, (await store.TryAcquireAsync(key, LockTtl)).Status);
    }

    [Fact]
    public async Task Result_ExpiresAfterItsTtl()
    {
        var clock = NewClock();
        var store = await CreateStoreAsync(clock);
        var key = UniqueKey();
        var acquired = await store.TryAcquireAsync(key, LockTtl);
        await store.CompleteAsync(key, acquired.LockToken, new byte[] { 1 }, ResultTtl);

        await AdvanceTimeAsync(clock, ResultTtl - TimeSpan.FromSeconds(1));
        Assert.Equal(IdempotencyAcquireStatus.Completed, (await store.TryAcquireAsync(key, LockTtl)).Status);

        await AdvanceTimeAsync(clock, TimeSpan.FromSeconds(2));
        Assert.Equal(IdempotencyAcquireStatus.Acquired, (await store.TryAcquireAsync(key, LockTtl)).Status);
    }

    [Fact]
    public async Task Complete_WithAStaleToken_StoresNothing()
    {
        var clock = NewClock();
        var store = await CreateStoreAsync(clock);
        var key = UniqueKey();
        var stale = await store.TryAcquireAsync(key, LockTtl);
        await AdvanceTimeAsync(clock, LockTtl + TimeSpan.FromSeconds(1));
        var current = await store.TryAcquireAsync(key, LockTtl);

        Assert.False(await store.CompleteAsync(key, stale.LockToken, new byte[] { 1 }, ResultTtl));

        Assert.Equal(IdempotencyAcquireStatus.Locked, (await store.TryAcquireAsync(key, LockTtl)).Status);
        Assert.True(await store.CompleteAsync(key, current.LockToken, new byte[] { 2 }, ResultTtl));
        Assert.Equal(new byte[] { 2 }, (await store.TryAcquireAsync(key, LockTtl)).Result.ToArray());
    }

    [Fact]
    public async Task Complete_RepeatedWithTheTokenThatStoredTheResult_ReportsItStored_AndKeepsTheFirstResult()
    {
        // A completion whose reply was lost (the connection dropped after the store committed) is tried again with the same
        // token (IdempotentCompletion): "not the holder" told the caller its lock was lost, though its result was stored.
        var store = await CreateStoreAsync(NewClock());
        var key = UniqueKey();
        var acquired = await store.TryAcquireAsync(key, LockTtl);
        Assert.True(await store.CompleteAsync(key, acquired.LockToken, new byte[] { 1 }, ResultTtl));

        Assert.True(await store.CompleteAsync(key, acquired.LockToken, new byte[] { 2 }, ResultTtl), "the result is stored under this token");
        Assert.False(await store.CompleteAsync(key, Guid.NewGuid(), new byte[] { 3 }, ResultTtl));

        // A completed key is no longer a lock: renew refuses it (IdempotentCompletion then completes once more to tell).
        Assert.False(await store.RenewAsync(key, acquired.LockToken, LockTtl));
        var again = await store.TryAcquireAsync(key, LockTtl);
        Assert.Equal(IdempotencyAcquireStatus.Completed, again.Status);
        Assert.Equal(new byte[] { 1 }, again.Result.ToArray());
    }

    [Fact]
    public async Task Renew_KeepsTheLockPastItsTtl_WhileTheHolderRuns()
    {
        // Issue 10: the lock of an operation outliving it let a second caller run the operation too.
        var clock = NewClock();
        var store = await CreateStoreAsync(clock);
        var key = UniqueKey();
        var held = await store.TryAcquireAsync(key, LockTtl);

        await AdvanceTimeAsync(clock, LockTtl - TimeSpan.FromSeconds(1));
        Assert.True(await store.RenewAsync(key, held.LockToken, LockTtl));
        await AdvanceTimeAsync(clock, LockTtl - TimeSpan.FromSeconds(1));

        Assert.Equal(IdempotencyAcquireStatus.Locked, (await store.TryAcquireAsync(key, LockTtl)).Status);
        Assert.True(await store.CompleteAsync(key, held.LockToken, new byte[] { 1 }, ResultTtl));
    }

    [Fact]
    public async Task RenewAndComplete_AfterTheLockTtlPassed_WhileNobodyTookTheKey_StillActForTheHolder()
    {
        // Issue 10: a holder whose store was down for longer than the lock timeout keeps the key once the store is back,
        // as long as no other caller took it meanwhile, and stores its result, so the next caller gets it instead of
        // running the operation (a payment) a second time.
        var clock = NewClock();
        var store = await CreateStoreAsync(clock);
        var key = UniqueKey();
        var held = await store.TryAcquireAsync(key, LockTtl);

        await AdvanceTimeAsync(clock, LockTtl * 3);
        Assert.True(await store.RenewAsync(key, held.LockToken, LockTtl));
        Assert.Equal(IdempotencyAcquireStatus.Locked, (await store.TryAcquireAsync(key, LockTtl)).Status);

        await AdvanceTimeAsync(clock, LockTtl * 3);
        Assert.True(await store.CompleteAsync(key, held.LockToken, new byte[] { 3 }, ResultTtl));
        var again = await store.TryAcquireAsync(key, LockTtl);
        Assert.Equal(IdempotencyAcquireStatus.Completed, again.Status);
        Assert.Equal(new byte[] { 3 }, again.Result.ToArray());
    }

    [Fact]
    public async Task AnExpiredLockNobodyTook_OutlivesTheSweepOfExpiredKeys_SoItsHolderStillStoresItsResult()
    {
        // The stores sweep expired keys every so many acquires. They swept expired locks too: a holder back from a store
        // outage longer than the lock ttl, whose completion came after a sweep, found its key gone and its result was not
        // stored, so the next caller ran the operation a second time.
        var clock = NewClock();
        var store = await CreateStoreAsync(clock);
        var key = UniqueKey();
        var held = await store.TryAcquireAsync(key, LockTtl);
        var done = UniqueKey();
        Assert.True(await store.CompleteAsync(done, (await store.TryAcquireAsync(done, LockTtl)).LockToken, new byte[] { 1 }, LockTtl));

        await AdvanceTimeAsync(clock, LockTtl * 3);
        for (var i = 0; i < 1100; i++)
        {
            Assert.Equal(IdempotencyAcquireStatus.Acquired, (await store.TryAcquireAsync(UniqueKey(), LockTtl)).Status);
        }

        Assert.True(await store.CompleteAsync(key, held.LockToken, new byte[] { 7 }, ResultTtl));
        Assert.Equal(new byte[] { 7 }, (await store.TryAcquireAsync(key, LockTtl)).Result.ToArray());
        Assert.Equal(IdempotencyAcquireStatus.Acquired, (await store.TryAcquireAsync(done, LockTtl)).Status);
    }

    [Fact]
    public async Task Renew_WithAStaleToken_ReturnsFalse_AndLeavesTheNewHoldersLock()
    {
        var clock = NewClock();
        var store = await CreateStoreAsync(clock);
        var key = UniqueKey();
        var stale = await store.TryAcquireAsync(key, LockTtl);
        await AdvanceTimeAsync(clock, LockTtl + TimeSpan.FromSeconds(1));
        var current = await store.TryAcquireAsync(key, LockTtl);

        Assert.False(await store.RenewAsync(key, stale.LockToken, LockTtl * 10));

        // The new holder's lock kept its own expiry, and is still the new holder's.
        Assert.True(await store.RenewAsync(key, current.LockToken, LockTtl));
        await AdvanceTimeAsync(clock, LockTtl + TimeSpan.FromSeconds(1));
        Assert.Equal(IdempotencyAcquireStatus.Acquired, (await store.TryAcquireAsync(key, LockTtl)).Status);
    }

    [Fact]
    public async Task Release_WithAStaleToken_LeavesTheNewHoldersLock()
    {
        var clock = NewClock();
        var store = await CreateStoreAsync(clock);
        var key = UniqueKey();
        var stale = await store.TryAcquireAsync(key, LockTtl);
        await AdvanceTimeAsync(clock, LockTtl + TimeSpan.FromSeconds(1));
        await store.TryAcquireAsync(key, LockTtl);

        Assert.False(await store.ReleaseAsync(key, stale.LockToken));

        Assert.Equal(IdempotencyAcquireStatus.Locked, (await store.TryAcquireAsync(key, LockTtl)).Status);
    }

    [Fact]
    public async Task Release_OfACompletedKey_ReturnsFalseAndKeepsTheResult()
    {
        var store = await CreateStoreAsync(NewClock());
        var key = UniqueKey();
        var acquired = await store.TryAcquireAsync(key, LockTtl);
        await store.CompleteAsync(key, acquired.LockToken, new byte[] { 7 }, ResultTtl);

        Assert.False(await store.ReleaseAsync(key, acquired.LockToken));

        Assert.Equal(IdempotencyAcquireStatus.Completed, (await store.TryAcquireAsync(key, LockTtl)).Status);
    }

    [Fact]
    public async Task ConcurrentAcquires_OfOneKey_ExactlyOneWins()
    {
        var store = await CreateStoreAsync(NewClock());
        var key = UniqueKey();

        var results = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(async () => await store.TryAcquireAsync(key, LockTtl))));

        Assert.Equal(1, results.Count(r => r.Status == IdempotencyAcquireStatus.Acquired));
        Assert.Equal(15, results.Count(r => r.Status == IdempotencyAcquireStatus.Locked));
    }

    [Fact]
    public async Task Keys_AreOrdinal_AndMayBe200CharactersLong()
    {
        var store = await CreateStoreAsync(NewClock());
        var key = UniqueKey();
        var longKey = (key + new string('x', 200))[..200];

        Assert.Equal(IdempotencyAcquireStatus.Acquired, (await store.TryAcquireAsync(key + "-a", LockTtl)).Status);
        Assert.Equal(IdempotencyAcquireStatus.Acquired, (await store.TryAcquireAsync(key + "-A", LockTtl)).Status);
        Assert.Equal(IdempotencyAcquireStatus.Acquired, (await store.TryAcquireAsync(longKey, LockTtl)).Status);
        Assert.Equal(IdempotencyAcquireStatus.Locked, (await store.TryAcquireAsync(longKey, LockTtl)).Status);
    }
}
