using Herald.Reliability.Idempotency;
using Herald.Conformance;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Tests.Reliability;

public sealed class IdempotencyServiceTests
{
    private static readonly TimeSpan Ttl = TimeSpan.FromHours(1);
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2030, 1, 2, 3, 0, 0, TimeSpan.Zero));
    private readonly InMemoryIdempotencyStore _store;
    private readonly IdempotencyService _service;

    public IdempotencyServiceTests()
    {
        _store = new InMemoryIdempotencyStore(_clock);
        _service = new IdempotencyService(_store, _clock, Options.Create(new IdempotencyOptions { WaitTimeout = TimeSpan.FromSeconds(5) }));
    }

    [Fact]
    public async Task FirstCall_RunsTheOperation_AndLaterCallsGetItsStoredResult()
    {
        var runs = 0;
        ValueTask<Receipt> Charge(CancellationToken _) => ValueTask.FromResult(new Receipt(++runs, "EUR", [1.5m, 2m]));

        var first = await _service.ExecuteAsync("charge-1", Charge, Ttl);
        var second = await _service.ExecuteAsync("charge-1", Charge, Ttl);

        Assert.Equal(1, runs);
        Assert.Equal(first.Number, second.Number);
        Assert.Equal(first.Amounts, second.Amounts);
    }

    [Fact]
    public async Task ConcurrentCalls_WithOneKey_RunTheOperationOnce_AndAllGetItsResult()
    {
        var runs = 0;
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        async ValueTask<int> Slow(CancellationToken _)
        {
            Interlocked.Increment(ref runs);
            entered.TrySetResult();
            await gate.Task;
            return 42;
        }

        var first = _service.ExecuteAsync("slow", Slow, Ttl).AsTask();
        await entered.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var waiters = Enumerable.Range(0, 8).Select(_ => Task.Run(async () => await _service.ExecuteAsync("slow", Slow, Ttl))).ToList();
        await Eventually.UntilAsync(() => waiters.All(w => !w.IsCompleted), "the waiters are waiting");
        gate.SetResult();

        // The fake clock never moves: the waiters are woken by the local signal, not by polling.
        var results = await Task.WhenAll(waiters.Append(first)).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.All(results, r => Assert.Equal(42, r));
        Assert.Equal(1, runs);
    }

    [Fact]
    public async Task FailedOperation_ReleasesTheKey_SoTheNextCallerRunsIt()
    {
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(async () =>
            await _service.ExecuteAsync<int>("flaky", _ => throw new InvalidOperationException("payment provider down"), Ttl));
        Assert.Equal("payment provider down", ex.Message);

        Assert.Equal(7, await _service.ExecuteAsync("flaky", _ => ValueTask.FromResult(7), Ttl));
    }

    [Fact]
    public async Task Waiter_GivesUpAfterTheWaitTimeout_WithAClearException()
    {
        await _store.TryAcquireAsync("held-elsewhere", TimeSpan.FromMinutes(10));
        var ran = false;

        var waiting = _service.ExecuteAsync("held-elsewhere", _ => ValueTask.FromResult(ran = true), Ttl).AsTask();
        await Eventually.UntilAsync(
            () =>
            {
                _clock.Advance(TimeSpan.FromMilliseconds(200));
                return waiting.IsCompleted;
            },
            "the waiter gives up");

        var ex = await Assert.ThrowsAsync<IdempotencyTimeoutException>(() => waiting);
        Assert.Equal("held-elsewhere", ex.Key);
        Assert.Contains("WaitTimeout", ex.Message, StringComparison.Ordinal);
        Assert.False(ran);
    }

    [Fact]
    public async Task Waiter_PicksUpAResultCompletedByAnotherProcess_ByPollingTheStore()
    {
        var elsewhere = await _store.TryAcquireAsync("shared", TimeSpan.FromMinutes(10));
        var ran = false;

        var waiting = _service.ExecuteAsync(
            "shared",
            _ =>
            {
                ran = true;
                return ValueTask.FromResult("mine");
            },
            Ttl).AsTask();
        await _store.CompleteAsync("shared", elsewhere.LockToken, "\"theirs\""u8.ToArray(), Ttl);
        await Eventually.UntilAsync(
            () =>
            {
                _clock.Advance(TimeSpan.FromMilliseconds(100));
                return waiting.IsCompleted;
            },
            "the waiter sees the stored result");

        Assert.Equal("theirs", await waiting);
        Assert.False(ran);
    }

    [Theory]
    [InlineData("", "is empty")]
    [InlineData("   ", "is only whitespace")]
    [InlineData(null, "is 201 characters long; at most 200 are allowed")]
    public async Task Key_ThatIsEmptyBlankOrTooLong_IsRejectedNamingTheProblem(string? key, string problem)
    {
        key ??= new string('k', 201);

        var ex = await Assert.ThrowsAsync<ArgumentException>(async () => await _service.ExecuteAsync(key, _ => ValueTask.FromResult(1), Ttl));

        Assert.Contains(problem, ex.Message, StringComparison.Ordinal);
        Assert.Equal("key", ex.ParamName);
    }

    [Fact]
    public async Task Key_Of200Characters_IsAccepted()
    {
        Assert.Equal(1, await _service.ExecuteAsync(new string('k', 200), _ => ValueTask.FromResult(1), Ttl));
    }

    [Fact]
    public async Task NullAndValueResults_RoundTrip()
    {
        Assert.Null(await _service.ExecuteAsync("null", _ => ValueTask.FromResult<string?>(null), Ttl));
        Assert.Null(await _service.ExecuteAsync("null", _ => ValueTask.FromResult<string?>("ran again"), Ttl));
        Assert.True(await _service.ExecuteAsync("bool", _ => ValueTask.FromResult(true), Ttl));
        Assert.True(await _service.ExecuteAsync("bool", _ => ValueTask.FromResult(false), Ttl));
    }

    [Theory]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    [InlineData(double.NegativeInfinity)]
    public async Task AResultOfNaNOrInfinity_IsStored_SoALaterCallerGetsItWithoutRunningTheOperationAgain(double value)
    {
        Assert.Equal(value, await _service.ExecuteAsync("ratio", _ => ValueTask.FromResult(value), Ttl));

        // Plain System.Text.Json cannot write these: the result was not stored, the lock was left to lapse, and the next
        // caller ran the operation again.
        var found = await _store.TryAcquireAsync("ratio", TimeSpan.FromSeconds(30));
        Assert.Equal(IdempotencyAcquireStatus.Completed, found.Status);
        Assert.Equal(value, await _service.ExecuteAsync<double>("ratio", _ => throw new InvalidOperationException("ran again"), Ttl));
    }

    [Fact]
    public async Task AValueTupleResult_IsStoredWithItsItems_NotAsAnEmptyObject()
    {
        Assert.Equal((7, "EUR"), await _service.ExecuteAsync("tuple", _ => ValueTask.FromResult((Number: 7, Currency: "EUR")), Ttl));

        // A tuple's items are fields, which System.Text.Json leaves out by default: it was stored as {} and a later caller
        // got (0, null) instead of the first caller's result.
        var later = await _service.ExecuteAsync<(int Number, string Currency)>("tuple", _ => throw new InvalidOperationException("ran again"), Ttl);
        Assert.Equal((7, "EUR"), later);
    }

    [Fact]
    public async Task AResultThatCannotBeWrittenAsJson_IsNotRunAgainByALaterCaller_WhichIsToldWhy()
    {
        var runs = 0;
        ValueTask<Loop> Charge(CancellationToken _)
        {
            runs++;
            var loop = new Loop();
            loop.Next = loop;
            return ValueTask.FromResult(loop);
        }

        var first = await _service.ExecuteAsync("cyclic", Charge, Ttl);
        Assert.Same(first, first.Next);

        // Its result was not stored and its lock left to lapse: once it had, the next caller charged again.
        _clock.Advance(TimeSpan.FromMinutes(1));
        var ex = await Assert.ThrowsAsync<HeraldException>(async () => await _service.ExecuteAsync("cyclic", Charge, Ttl));

        Assert.Contains("ran, but its result could not be written as JSON", ex.Message, StringComparison.Ordinal);
        Assert.Equal(1, runs);
    }

    [Fact]
    public async Task AStoredResultOfATypeNoConverterCreates_IsRefusedWithTheKeyAndType()
    {
        IPriced first = new Priced(12m);
        Assert.Same(first, await _service.ExecuteAsync("priced", _ => ValueTask.FromResult(first), Ttl));

        // An interface is written through its declared members, but reading one back throws NotSupportedException, which
        // reached the later caller raw instead of as the error every other unreadable stored result gives.
        var ex = await Assert.ThrowsAsync<HeraldException>(async () =>
            await _service.ExecuteAsync<IPriced>("priced", _ => throw new InvalidOperationException("ran again"), Ttl));

        Assert.Contains("'priced'", ex.Message, StringComparison.Ordinal);
        Assert.Contains(nameof(IPriced), ex.Message, StringComparison.Ordinal);
        Assert.IsType<NotSupportedException>(ex.InnerException);
    }

    [Fact]
    public async Task StoredResult_Expires_AfterItsTtl()
    {
        await _service.ExecuteAsync("short", _ => ValueTask.FromResult(1), TimeSpan.FromMinutes(1));
        _clock.Advance(TimeSpan.FromMinutes(2));

        Assert.Equal(2, await _service.ExecuteAsync("short", _ => ValueTask.FromResult(2), TimeSpan.FromMinutes(1)));
    }

    [Fact]
    public void AddHerald_RegistersTheServiceOverTheInMemoryStore()
    {
        var services = new ServiceCollection();
        services.AddHerald();
        using var provider = services.BuildServiceProvider();

        Assert.NotNull(provider.GetRequiredService<IdempotencyService>());
        Assert.IsType<InMemoryIdempotencyStore>(provider.GetRequiredService<IIdempotencyStore>());
    }

    [Fact]
    public async Task AnOperationOutlivingTheLockTimeout_KeepsItsLock_BecauseItIsRenewed()
    {
        // Issue 10: the lock expired under a running operation, and a second caller ran the operation too.
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var slow = _service.ExecuteAsync("slow", async ct =>
        {
            running.TrySetResult();
            await release.Task.WaitAsync(ct);
            return 1;
        }, Ttl).AsTask();
        await running.Task.WaitAsync(Eventually.DefaultTimeout);

        // Three lock timeouts (30 s), a third at a time: each step is due a renewal.
        for (var step = 0; step < 9; step++)
        {
            _clock.Advance(TimeSpan.FromSeconds(10));
            Assert.Equal(IdempotencyAcquireStatus.Locked, (await _store.TryAcquireAsync("slow", TimeSpan.FromSeconds(30))).Status);
        }

        release.TrySetResult();
        Assert.Equal(1, await slow.WaitAsync(Eventually.DefaultTimeout));
        Assert.Equal(IdempotencyAcquireStatus.Completed, (await _store.TryAcquireAsync("slow", TimeSpan.FromSeconds(30))).Status);
    }

    [Fact]
    public async Task ALockAnotherCallerTook_CancelsTheOperation_AndNothingIsStored()
    {
        var store = new TakenLockStore(_store);
        var service = new IdempotencyService(store, _clock);
        var running = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var operation = service.ExecuteAsync("taken", async ct =>
        {
            running.TrySetResult();
            await Task.Delay(Timeout.Infinite, ct);
            return 1;
        }, Ttl).AsTask();
        await running.Task.WaitAsync(Eventually.DefaultTimeout);

        store.Taken = true;
        _clock.Advance(TimeSpan.FromSeconds(10));

        await Assert.ThrowsAsync<Herald.Persistence.LeaseLostException>(() => operation.WaitAsync(Eventually.DefaultTimeout));
        Assert.Equal(0, store.Completions);
    }

    /// <summary>
    /// Renewals failing (this node cannot reach the store, others can) until the lock ran out: another caller may take the key
    /// and run the operation too, so this one is cancelled, as a leased queue cancels a handler whose lease ran out. It ran on.
    /// </summary>
    [Fact]
    public async Task ALockWhoseRenewalsFailUntilItRanOut_CancelsTheOperation()
    {
        var lockTimeout = TimeSpan.FromSeconds(30);
        var store = new OutageStore(_store);
        var service = new IdempotencyService(store, _clock, Options.Create(new IdempotencyOptions { LockTimeout = lockTimeout }));
        var running = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var operation = service.ExecuteAsync("unreachable", async ct =>
        {
            running.TrySetResult();
            await Task.Delay(Timeout.Infinite, ct);
            return 1;
        }, Ttl).AsTask();
        await running.Task.WaitAsync(Eventually.DefaultTimeout);

        store.Down = true;
        var outage = _clock.GetUtcNow();
        await Eventually.UntilAsync(
            () =>
            {
                _clock.Advance(TimeSpan.FromSeconds(1));
                return operation.IsCompleted;
            },
            "the operation is cancelled once its lock ran out");

        Assert.True(_clock.GetUtcNow() - outage >= lockTimeout, $"cancelled {_clock.GetUtcNow() - outage} into the outage, before the lock could run out");
        var lost = await Assert.ThrowsAsync<Herald.Persistence.LeaseLostException>(() => operation);
        Assert.Contains("ran out", lost.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AResultTheStoreFailsToTakeForAWhile_IsStoredOnceItAnswers_SoTheNextCallerDoesNotRunTheOperationAgain_Issue10()
    {
        // The system clock: the retry pauses are real (50 ms, then 100 ms).
        var store = new FailingCompletionStore(new InMemoryIdempotencyStore(TimeProvider.System)) { FailuresLeft = 2 };
        var service = new IdempotencyService(store, TimeProvider.System);
        var runs = 0;

        Assert.Equal(1, await service.ExecuteAsync("charge-r", _ => ValueTask.FromResult(++runs), Ttl).AsTask().WaitAsync(Eventually.DefaultTimeout));
        Assert.Equal(1, await service.ExecuteAsync("charge-r", _ => ValueTask.FromResult(++runs), Ttl).AsTask().WaitAsync(Eventually.DefaultTimeout));

        Assert.Equal(1, runs);
        Assert.Equal(3, store.Completions);
    }

    [Fact]
    public async Task ACompletionWhoseReplyWasLost_IsReportedStored_NotTheLockLost()
    {
        // The store took the result but its reply was lost: the retry's renewal is refused (the key is completed), and the
        // last completion, repeated with the token that stored the result, must say stored. The system clock: one 50 ms pause.
        var inner = new InMemoryIdempotencyStore(TimeProvider.System);
        var store = new LostReplyStore(inner) { RepliesToLose = 1 };
        var acquired = await store.TryAcquireAsync("charge-lost-reply", Ttl);

        var stored = await Herald.Internal.IdempotentCompletion.StoreAsync(
            store, "charge-lost-reply", acquired.LockToken, new byte[] { 6 }, Ttl, TimeSpan.FromSeconds(30), TimeSpan.FromSeconds(30), TimeProvider.System, (_, _) => { })
            .AsTask().WaitAsync(Eventually.DefaultTimeout);

        Assert.True(stored, "the result is stored under this caller's token; false tells the caller its lock was lost");
        Assert.Equal(new byte[] { 6 }, (await inner.TryAcquireAsync("charge-lost-reply", Ttl)).Result.ToArray());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AStoreOutageOutlastingTheLockTimeout_WhileTheResultIsStored_DoesNotLetTheOperationRunAgain(bool renewalsWork)
    {
        // Issue 10: the result was tried again only for 60% of the lock timeout; a longer outage left it unstored, the lock
        // lapsed, and the next caller (the message's retry) ran the operation, a payment, a second time.
        var lockTimeout = TimeSpan.FromSeconds(30);
        var store = new OutageStore(_store) { RenewalsWork = renewalsWork };
        var service = new IdempotencyService(store, _clock, Options.Create(new IdempotencyOptions { LockTimeout = lockTimeout }));
        var runs = 0;
        ValueTask<int> Charge(CancellationToken _)
        {
            store.Down = true;
            return ValueTask.FromResult(Interlocked.Increment(ref runs));
        }

        var first = service.ExecuteAsync("charge-outage", Charge, Ttl).AsTask();
        var outage = _clock.GetUtcNow();
        await Eventually.UntilAsync(
            () =>
            {
                _clock.Advance(TimeSpan.FromSeconds(1));
                return _clock.GetUtcNow() - outage > lockTimeout * 2 && store.Completions > 10;
            },
            "the store has been down for two lock timeouts");
        if (renewalsWork)
        {
            // Only completions fail: the lock, renewed between them, keeps other callers out.
            Assert.Equal(IdempotencyAcquireStatus.Locked, (await _store.TryAcquireAsync("charge-outage", lockTimeout)).Status);
        }

        store.Down = false;
        await Eventually.UntilAsync(
            () =>
            {
                _clock.Advance(TimeSpan.FromSeconds(1));
                return first.IsCompleted;
            },
            "the first caller returns once the store is back");

        Assert.Equal(1, await first);
        var retry = await service.ExecuteAsync("charge-outage", _ => ValueTask.FromResult(Interlocked.Increment(ref runs)), Ttl).AsTask().WaitAsync(Eventually.DefaultTimeout);
        Assert.Equal(1, retry);
        Assert.Equal(1, runs);
    }

    [Fact]
    public async Task AStoreThatNeverTakesTheResult_HoldsTheCallerOnlyForTheCompletionTimeout_ThenGivesItTheResultUnstored()
    {
        // The completion used to be tried again for as long as the store failed: a store down for good (or one that keeps
        // rejecting the result while it takes renewals) held the caller, a request or a consumer's worker, forever.
        var completionTimeout = TimeSpan.FromMinutes(2);
        var options = new IdempotencyOptions { LockTimeout = TimeSpan.FromSeconds(30), CompletionTimeout = completionTimeout };
        var store = new OutageStore(_store) { RenewalsWork = true };
        var service = new IdempotencyService(store, _clock, Options.Create(options));
        var runs = 0;
        var start = _clock.GetUtcNow();
        var first = service.ExecuteAsync("charge-down", _ =>
        {
            store.Down = true;
            return ValueTask.FromResult(Interlocked.Increment(ref runs));
        }, Ttl).AsTask();

        await Eventually.UntilAsync(
            () =>
            {
                _clock.Advance(TimeSpan.FromSeconds(1));
                return first.IsCompleted || _clock.GetUtcNow() - start > completionTimeout * 3;
            },
            "the first caller returns");

        Assert.True(first.IsCompleted, "the caller is still held after three completion timeouts");
        Assert.Equal(1, await first);
        Assert.InRange(_clock.GetUtcNow() - start, completionTimeout, completionTimeout + TimeSpan.FromSeconds(5));

        // Given up, the lock is no longer renewed: it lapses, as a dead holder's does, and the key is free again.
        store.Down = false;
        _clock.Advance(options.LockTimeout + TimeSpan.FromSeconds(1));
        Assert.Equal(IdempotencyAcquireStatus.Acquired, (await _store.TryAcquireAsync("charge-down", options.LockTimeout)).Status);
    }

    [Fact]
    public async Task ATtlTooLongForTheStoreToHoldAnExpiry_IsRefusedBeforeTheOperationRuns()
    {
        // Every store computes now + ttl on completion: TimeSpan.MaxValue overflowed there on each try, after the operation
        // had run, and the completion was tried again forever.
        var runs = 0;
        var call = _service.ExecuteAsync("forever", _ => ValueTask.FromResult(++runs), TimeSpan.MaxValue).AsTask();

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => call.WaitAsync(Eventually.DefaultTimeout));
        Assert.Equal(0, runs);
    }

    /// <summary>A store that throws while <see cref="Down"/> is set, as a server that is down does (renewals aside when <see cref="RenewalsWork"/>).</summary>
    private sealed class OutageStore(IIdempotencyStore inner) : IIdempotencyStore
    {
        private int _completions;

        public volatile bool Down;

        public bool RenewalsWork { get; init; }

        public int Completions => Volatile.Read(ref _completions);

        public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default) =>
            Down ? throw new TimeoutException("the server is down") : inner.TryAcquireAsync(key, lockTtl, cancellationToken);

        public ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref _completions);
            return Down ? throw new TimeoutException("the server is down") : inner.CompleteAsync(key, lockToken, result, ttl, cancellationToken);
        }

        public ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default) =>
            Down ? throw new TimeoutException("the server is down") : inner.ReleaseAsync(key, lockToken, cancellationToken);

        public ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default) =>
            Down && !RenewalsWork ? throw new TimeoutException("the server is down") : inner.RenewAsync(key, lockToken, lockTtl, cancellationToken);
    }

    /// <summary>A store whose first <see cref="FailuresLeft"/> completions throw, as a restarting server does.</summary>
    private sealed class FailingCompletionStore(IIdempotencyStore inner) : IIdempotencyStore
    {
        private int _completions;

        public int FailuresLeft;

        public int Completions => Volatile.Read(ref _completions);

        public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default) =>
            inner.TryAcquireAsync(key, lockTtl, cancellationToken);

        public ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref _completions);
            return Interlocked.Decrement(ref FailuresLeft) >= 0
                ? throw new TimeoutException("the server is restarting")
                : inner.CompleteAsync(key, lockToken, result, ttl, cancellationToken);
        }

        public ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default) =>
            inner.ReleaseAsync(key, lockToken, cancellationToken);

        public ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default) =>
            inner.RenewAsync(key, lockToken, lockTtl, cancellationToken);
    }

    /// <summary>A store whose first <see cref="RepliesToLose"/> completions take effect, then throw, as a reply lost on the way back does.</summary>
    private sealed class LostReplyStore(IIdempotencyStore inner) : IIdempotencyStore
    {
        public int RepliesToLose;

        public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default) =>
            inner.TryAcquireAsync(key, lockTtl, cancellationToken);

        public async ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default)
        {
            var completed = await inner.CompleteAsync(key, lockToken, result, ttl, cancellationToken);
            return Interlocked.Decrement(ref RepliesToLose) >= 0 ? throw new TimeoutException("the connection dropped before the reply") : completed;
        }

        public ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default) =>
            inner.ReleaseAsync(key, lockToken, cancellationToken);

        public ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default) =>
            inner.RenewAsync(key, lockToken, lockTtl, cancellationToken);
    }

    public sealed record Receipt(int Number, string Currency, IReadOnlyList<decimal> Amounts);

    public interface IPriced
    {
        decimal Price { get; }
    }

    public sealed record Priced(decimal Price) : IPriced;

    public sealed class Loop
    {
        public Loop? Next { get; set; }
    }

    /// <summary>A store whose renewals find the lock taken by another caller once <see cref="Taken"/> is set.</summary>
    private sealed class TakenLockStore(IIdempotencyStore inner) : IIdempotencyStore
    {
        private int _completions;

        public volatile bool Taken;

        public int Completions => Volatile.Read(ref _completions);

        public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default) =>
            inner.TryAcquireAsync(key, lockTtl, cancellationToken);

        public ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref _completions);
            return inner.CompleteAsync(key, lockToken, result, ttl, cancellationToken);
        }

        public ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default) =>
            inner.ReleaseAsync(key, lockToken, cancellationToken);

        public ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default) =>
            Taken ? ValueTask.FromResult(false) : inner.RenewAsync(key, lockToken, lockTtl, cancellationToken);
    }
}
