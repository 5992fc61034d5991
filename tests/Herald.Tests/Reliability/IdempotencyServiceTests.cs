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

    public sealed record Receipt(int Number, string Currency, IReadOnlyList<decimal> Amounts);
}
