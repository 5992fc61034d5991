using Herald.Persistence;
using Herald.Reliability;
using Herald.Reliability.Inbox;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Herald.Conformance.Reliability;

/// <summary>
/// The contract of <see cref="IInbox"/>. An inbox's test project derives from it and implements
/// <see cref="CreateInboxAsync"/> (over the given clock, which the store must use for expiry) and
/// <see cref="BeginUnitOfWorkAsync"/>. Every test uses endpoints and message ids of its own.
/// </summary>
public abstract class InboxConformance
{
    private static readonly TimeSpan Window = TimeSpan.FromMinutes(10);

    /// <summary>Creates the inbox under test on the given clock.</summary>
    protected abstract ValueTask<IInbox> CreateInboxAsync(TimeProvider timeProvider);

    /// <summary>Begins a unit of work the inbox enlists in (for SQL stores: a transaction on the same database).</summary>
    protected abstract ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IInbox inbox);

    /// <summary>Moves time forward; override only if the engine expires marks by a clock of its own.</summary>
    protected virtual ValueTask AdvanceTimeAsync(FakeTimeProvider clock, TimeSpan duration)
    {
        ArgumentNullException.ThrowIfNull(clock);
        clock.Advance(duration);
        return ValueTask.CompletedTask;
    }

    /// <summary>An endpoint name no other test uses.</summary>
    protected static string UniqueEndpoint() => "conformance-" + Guid.NewGuid().ToString("N");

    /// <summary>A clock at a fixed start, so expiry does not depend on the machine's time.</summary>
    protected static FakeTimeProvider NewClock() => new(new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero));

    [Fact]
    public async Task FirstMark_ReturnsTrue_AndTheMessageCountsAsHandled()
    {
        var inbox = await CreateInboxAsync(NewClock());
        var endpoint = UniqueEndpoint();
        var id = Guid.CreateVersion7();

        Assert.False(await inbox.IsHandledAsync(endpoint, id));
        Assert.True(await inbox.TryMarkHandledAsync(endpoint, id, Window));
        Assert.True(await inbox.IsHandledAsync(endpoint, id));
    }

    [Fact]
    public async Task IsHandled_ForAnEndpointHoldingU0000_IsFalse()
    {
        // No mark can have it on PostgreSQL (its text cannot hold U+0000), which answered with a bare 22021.
        var inbox = await CreateInboxAsync(NewClock());

        Assert.False(await inbox.IsHandledAsync(UniqueEndpoint() + "\0", Guid.CreateVersion7()));
    }

    [Fact]
    public async Task SecondMark_WithinTheWindow_ReturnsFalse()
    {
        var clock = NewClock();
        var inbox = await CreateInboxAsync(clock);
        var endpoint = UniqueEndpoint();
        var id = Guid.CreateVersion7();

        await inbox.TryMarkHandledAsync(endpoint, id, Window);
        await AdvanceTimeAsync(clock, Window - TimeSpan.FromSeconds(1));

        Assert.False(await inbox.TryMarkHandledAsync(endpoint, id, Window));
    }

    [Fact]
    public async Task Mark_AfterTheWindow_ReturnsTrueAgain()
    {
        var clock = NewClock();
        var inbox = await CreateInboxAsync(clock);
        var endpoint = UniqueEndpoint();
        var id = Guid.CreateVersion7();

        await inbox.TryMarkHandledAsync(endpoint, id, Window);
        await AdvanceTimeAsync(clock, Window + TimeSpan.FromSeconds(1));

        Assert.False(await inbox.IsHandledAsync(endpoint, id));
        Assert.True(await inbox.TryMarkHandledAsync(endpoint, id, Window));
        Assert.False(await inbox.TryMarkHandledAsync(endpoint, id, Window));
    }

    [Fact]
    public async Task Marks_ArePerEndpoint()
    {
        var inbox = await CreateInboxAsync(NewClock());
        var id = Guid.CreateVersion7();
        var orders = UniqueEndpoint();
        var billing = UniqueEndpoint();

        Assert.True(await inbox.TryMarkHandledAsync(orders, id, Window));
        Assert.True(await inbox.TryMarkHandledAsync(billing, id, Window));
        Assert.False(await inbox.TryMarkHandledAsync(orders, id, Window));
        Assert.False(await inbox.IsHandledAsync(UniqueEndpoint(), id));
    }

    [Fact]
    public async Task ConcurrentMarks_OfOneMessage_ExactlyOneWins()
    {
        var inbox = await CreateInboxAsync(NewClock());
        var endpoint = UniqueEndpoint();
        var id = Guid.CreateVersion7();

        var results = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(async () => await inbox.TryMarkHandledAsync(endpoint, id, Window))));

        Assert.Equal(1, results.Count(r => r));
    }

    [Fact]
    public async Task DeleteExpired_RemovesExpiredMarks_AndKeepsLiveOnes()
    {
        var clock = NewClock();
        var inbox = await CreateInboxAsync(clock);
        var endpoint = UniqueEndpoint();
        var shortLived = new[] { Guid.CreateVersion7(), Guid.CreateVersion7() };
        var live = Guid.CreateVersion7();
        foreach (var id in shortLived)
        {
            await inbox.TryMarkHandledAsync(endpoint, id, TimeSpan.FromMinutes(1));
        }

        await inbox.TryMarkHandledAsync(endpoint, live, TimeSpan.FromHours(1));
        await AdvanceTimeAsync(clock, TimeSpan.FromMinutes(2));

        long deleted = 0;
        int batch;
        while ((batch = await inbox.DeleteExpiredAsync(100)) > 0)
        {
            deleted += batch;
        }

        Assert.True(deleted >= 2, $"at least the test's 2 expired marks are deleted, got {deleted}");
        Assert.True(await inbox.IsHandledAsync(endpoint, live));
        Assert.False(await inbox.TryMarkHandledAsync(endpoint, live, Window));
    }

    [Fact]
    public async Task DeleteExpired_DeletesAtMostMaxCount()
    {
        var clock = NewClock();
        var inbox = await CreateInboxAsync(clock);
        var endpoint = UniqueEndpoint();
        for (var i = 0; i < 5; i++)
        {
            await inbox.TryMarkHandledAsync(endpoint, Guid.CreateVersion7(), TimeSpan.FromMinutes(1));
        }

        await AdvanceTimeAsync(clock, TimeSpan.FromMinutes(2));

        Assert.Equal(2, await inbox.DeleteExpiredAsync(2));
    }

    [Fact]
    public async Task Mark_InAUnitOfWorkThatRollsBack_IsUndone()
    {
        var inbox = await CreateInboxAsync(NewClock());
        var endpoint = UniqueEndpoint();
        var id = Guid.CreateVersion7();
        var unitOfWork = await BeginUnitOfWorkAsync(inbox);

        Assert.True(await inbox.TryMarkHandledAsync(endpoint, id, Window, unitOfWork));
        await unitOfWork.RollbackAsync();

        Assert.False(await inbox.IsHandledAsync(endpoint, id));
        Assert.True(await inbox.TryMarkHandledAsync(endpoint, id, Window));
    }

    [Fact]
    public async Task Mark_InAUnitOfWorkThatCommits_Stays()
    {
        var inbox = await CreateInboxAsync(NewClock());
        var endpoint = UniqueEndpoint();
        var id = Guid.CreateVersion7();
        var unitOfWork = await BeginUnitOfWorkAsync(inbox);

        Assert.True(await inbox.TryMarkHandledAsync(endpoint, id, Window, unitOfWork));
        await unitOfWork.CommitAsync();

        Assert.True(await inbox.IsHandledAsync(endpoint, id));
        Assert.False(await inbox.TryMarkHandledAsync(endpoint, id, Window));
    }

    [Fact]
    public async Task ASecondMark_InTheSameUnitOfWork_ReturnsFalseAtOnce_AndTheMarkCommits()
    {
        // A unit of work does not wait for itself: a database's transaction sees its own row (a conflict, so a duplicate).
        var inbox = await CreateInboxAsync(TimeProvider.System);
        var endpoint = UniqueEndpoint();
        var id = Guid.CreateVersion7();
        var unitOfWork = await BeginUnitOfWorkAsync(inbox);
        Assert.True(await inbox.TryMarkHandledAsync(endpoint, id, Window, unitOfWork));

        Assert.False(await inbox.TryMarkHandledAsync(endpoint, id, Window, unitOfWork).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
        await unitOfWork.CommitAsync();
        Assert.True(await inbox.IsHandledAsync(endpoint, id));
        Assert.False(await inbox.TryMarkHandledAsync(endpoint, id, Window));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ASecondMark_WhileTheFirstsUnitOfWorkIsOpen_WaitsForIt_AndWinsIfItRollsBack(bool firstRollsBack)
    {
        // The system clock: an engine may poll for the first mark's outcome on the inbox's clock (Redis).
        var inbox = await CreateInboxAsync(TimeProvider.System);
        var endpoint = UniqueEndpoint();
        var id = Guid.CreateVersion7();
        var first = await BeginUnitOfWorkAsync(inbox);
        Assert.True(await inbox.TryMarkHandledAsync(endpoint, id, Window, first));
        var second = await BeginUnitOfWorkAsync(inbox);

        // Answering "duplicate" before the first attempt ends would ack the second copy although that attempt may fail.
        var secondMark = inbox.TryMarkHandledAsync(endpoint, id, Window, second).AsTask();
        await (firstRollsBack ? first.RollbackAsync() : first.CommitAsync());

        Assert.Equal(firstRollsBack, await secondMark.WaitAsync(TimeSpan.FromSeconds(30)));
        await second.CommitAsync();
        Assert.True(await inbox.IsHandledAsync(endpoint, id));
    }

    [Fact]
    public async Task Mark_WithANonPositiveWindow_Throws()
    {
        var inbox = await CreateInboxAsync(NewClock());

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await inbox.TryMarkHandledAsync(UniqueEndpoint(), Guid.CreateVersion7(), TimeSpan.Zero));
    }
}
