using Herald.Persistence;
using System.Text;
using Herald.Messages;
using Herald.Reliability;
using Herald.Reliability.Inbox;
using Herald.Conformance;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using static Herald.Tests.Reliability.FailureInjectionTests;

namespace Herald.Tests.Reliability;

public sealed class InboxTests
{
    [Fact]
    public async Task DuplicateDelivery_RunsTheHandlerOnce_AndIsAcked()
    {
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton).UseInbox(), s => s.AddSingleton(effects), concurrency: 1);
        var envelope = Envelope("once");

        await host.Transport.SendAsync(host.Endpoint, envelope);
        await host.Transport.SendAsync(host.Endpoint, envelope);

        await Eventually.UntilAsync(() => host.Transport.Settlements.Count(s => s.Kind == SettlementKind.Ack) == 2, "both deliveries are acked");
        Assert.Equal(["once"], effects.Applied);
        Assert.Single(host.Logs.Entries, e => e.EventId == 2020);
        Assert.True(await host.Get<IInbox>().IsHandledAsync(host.Endpoint, envelope.MessageId));
    }

    [Fact]
    public async Task AMark_InAUnitOfWorkThatCanNoLongerTakeCallbacks_Throws_AndLeavesNoMarkForASecondMarkToWaitOn()
    {
        // Nothing would end such a mark, and a second mark of the id waits for a pending mark's unit of work to end.
        var inbox = new InMemoryInbox(TimeProvider.System);
        var endpoint = "orders";
        var id = Guid.CreateVersion7();
        var committed = new InMemoryUnitOfWork();
        await committed.CommitAsync();

        await Assert.ThrowsAsync<InvalidOperationException>(async () => await inbox.TryMarkHandledAsync(endpoint, id, TimeSpan.FromMinutes(1), committed));

        Assert.True(await inbox.TryMarkHandledAsync(endpoint, id, TimeSpan.FromMinutes(1)).AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
    }

    // The window ran from the attempt's start: a handler longer than the window left its pending mark expired, so a
    // duplicate ran beside it, and the committed mark was already expired (the cleanup deleted it; a redelivery ran again).
    [Fact]
    public async Task AMarkInAUnitOfWork_OutlastingItsWindow_StillHoldsADuplicateOff_AndExpiresAWindowAfterItsCommit()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var inbox = new InMemoryInbox(clock);
        var (endpoint, id, window) = ("orders", Guid.CreateVersion7(), TimeSpan.FromMinutes(1));
        await using var first = new InMemoryUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync(endpoint, id, window, first));

        clock.Advance(window + TimeSpan.FromMinutes(1));
        Assert.Equal(0, await inbox.DeleteExpiredAsync(10));
        await using var second = new InMemoryUnitOfWork();
        var duplicate = inbox.TryMarkHandledAsync(endpoint, id, window, second).AsTask();
        Assert.False(duplicate.IsCompleted);

        await first.CommitAsync();
        Assert.False(await duplicate.WaitAsync(TimeSpan.FromSeconds(30)));
        clock.Advance(window - TimeSpan.FromSeconds(1));
        Assert.True(await inbox.IsHandledAsync(endpoint, id));
        Assert.Equal(0, await inbox.DeleteExpiredAsync(10));
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.False(await inbox.IsHandledAsync(endpoint, id));
        Assert.Equal(1, await inbox.DeleteExpiredAsync(10));
    }

    [Fact]
    public async Task FailedAttempt_LeavesNoMark_SoItsRetryRuns()
    {
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton).UseInbox().ConfigureRetries(r => r.Immediate(1)),
            s => s.AddSingleton(effects));

        await host.Transport.SendAsync(host.Endpoint, Envelope("second-time-lucky", failTimes: 1));

        await Eventually.UntilAsync(() => effects.Applied.Count == 1, "the immediate retry takes effect");
        Assert.Equal([1, 2], effects.Attempts);
        Assert.DoesNotContain(host.Logs.Entries, e => e.EventId == 2020);
    }

    [Fact]
    public async Task Duplicate_AfterTheWindow_RunsAgain()
    {
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton).UseInbox(o => o.Window = TimeSpan.FromMinutes(5)),
            s => s.AddSingleton(effects),
            concurrency: 1);
        var envelope = Envelope("twice");

        await host.Transport.SendAsync(host.Endpoint, envelope);
        await Eventually.UntilAsync(() => effects.Applied.Count == 1, "the first delivery takes effect");
        host.Clock.Advance(TimeSpan.FromMinutes(6));
        await host.Transport.SendAsync(host.Endpoint, envelope);

        await Eventually.UntilAsync(() => effects.Applied.Count == 2, "the late duplicate runs again");
    }

    [Fact]
    public async Task Inbox_LimitedToOtherEndpoints_LetsDuplicatesRunHere()
    {
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton).UseInbox(o => o.Endpoints.Add("some-other-endpoint")),
            s => s.AddSingleton(effects),
            concurrency: 1);
        var envelope = Envelope("both");

        await host.Transport.SendAsync(host.Endpoint, envelope);
        await host.Transport.SendAsync(host.Endpoint, envelope);

        await Eventually.UntilAsync(() => effects.Applied.Count == 2, "both deliveries run");
    }

    [Fact]
    public async Task Cleanup_DeletesExpiredMarks_OnItsInterval()
    {
        CountingInbox? inbox = null;
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton).UseInbox(o =>
            {
                o.Window = TimeSpan.FromMinutes(1);
                o.CleanupInterval = TimeSpan.FromMinutes(2);
            }),
            s => s.AddSingleton(new Effects()).AddSingleton<IInbox>(sp => inbox = new CountingInbox(new InMemoryInbox(sp.GetRequiredService<TimeProvider>()))));

        await host.Transport.SendAsync(host.Endpoint, Envelope("short-lived"));
        await Eventually.UntilAsync(() => host.Transport.Settlements.Count == 1, "the message is handled");

        await host.RunUntilAsync(() => inbox!.Deleted >= 1, "the cleanup deletes the expired mark", TimeSpan.FromSeconds(30));
    }

    private static Envelope Envelope(string name, int failTimes = 0) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "rel-flaky",
        Time = new DateTimeOffset(2030, 1, 2, 3, 0, 0, TimeSpan.Zero),
        Body = Encoding.UTF8.GetBytes($$"""{"name":"{{name}}","failTimes":{{failTimes}}}"""),
    };

    private sealed class CountingInbox(IInbox inner) : IInbox
    {
        private readonly IInbox _inner = inner;
        private int _deleted;

        public int Deleted => Volatile.Read(ref _deleted);

        public ValueTask<bool> TryMarkHandledAsync(string endpoint, Guid messageId, TimeSpan window, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default) =>
            _inner.TryMarkHandledAsync(endpoint, messageId, window, unitOfWork, cancellationToken);

        public ValueTask<bool> IsHandledAsync(string endpoint, Guid messageId, CancellationToken cancellationToken = default) =>
            _inner.IsHandledAsync(endpoint, messageId, cancellationToken);

        public async ValueTask<int> DeleteExpiredAsync(int maxCount, CancellationToken cancellationToken = default)
        {
            var deleted = await _inner.DeleteExpiredAsync(maxCount, cancellationToken);
            Interlocked.Add(ref _deleted, deleted);
            return deleted;
        }
    }
}
