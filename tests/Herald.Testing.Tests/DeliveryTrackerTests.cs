using Herald.Testing.Internal;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Testing.Tests;

/// <summary>The count behind WaitForIdleAsync: what the host still owes, step by step, with no host and no race.</summary>
public sealed class DeliveryTrackerTests
{
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));

    [Fact]
    public void SentMessage_IsOwedUntilADeliveryOfItIsSettled()
    {
        var tracker = Consuming("orders");
        var id = Guid.NewGuid();

        tracker.Expect("orders", published: false, id, delay: null);
        Assert.False(tracker.IsIdle(out var underWay));
        Assert.Equal("0 deliveries running, 1 due", underWay);

        tracker.Started();
        tracker.Settled("orders", id, redeliverAfter: null);
        Assert.False(tracker.IsIdle(out _));
        tracker.Ended();
        Assert.True(tracker.IsIdle(out _));
    }

    [Fact]
    public void DelayedMessage_IsOwedOnlyOnceTheClockReachesIt()
    {
        var tracker = Consuming("orders");

        tracker.Expect("orders", published: false, Guid.NewGuid(), TimeSpan.FromMinutes(5));
        Assert.True(tracker.IsIdle(out _));

        _clock.Advance(TimeSpan.FromMinutes(5));
        Assert.False(tracker.IsIdle(out _));
    }

    [Fact]
    public void RedeliveredMessage_IsOwedAgainAfterItsDelay()
    {
        var tracker = Consuming("orders");
        var id = Guid.NewGuid();
        tracker.Expect("orders", published: false, id, delay: null);

        tracker.Settled("orders", id, redeliverAfter: TimeSpan.FromSeconds(30));
        Assert.True(tracker.IsIdle(out _));

        _clock.Advance(TimeSpan.FromSeconds(30));
        Assert.False(tracker.IsIdle(out _));
        tracker.Settled("orders", id, redeliverAfter: null);
        Assert.True(tracker.IsIdle(out _));
    }

    [Fact]
    public void PublishedMessage_IsOwedToEveryBoundQueueThisHostConsumes_AndNotToOthers()
    {
        var tracker = Consuming("orders");
        tracker.Consuming("billing");
        tracker.Bound("order-placed", "orders");
        tracker.Bound("order-placed", "billing");
        tracker.Bound("order-placed", "someone-elses");
        var id = Guid.NewGuid();

        tracker.Expect("order-placed", published: true, id, delay: null);
        Assert.False(tracker.IsIdle(out var underWay));
        Assert.Equal("0 deliveries running, 2 due", underWay);

        tracker.Settled("orders", id, redeliverAfter: null);
        Assert.False(tracker.IsIdle(out _));
        tracker.Settled("billing", id, redeliverAfter: null);
        Assert.True(tracker.IsIdle(out _));
    }

    [Fact]
    public void FailedSend_IsForgotten()
    {
        var tracker = Consuming("orders");

        var expected = tracker.Expect("orders", published: false, Guid.NewGuid(), delay: null);
        tracker.Forget(expected);

        Assert.True(tracker.IsIdle(out _));
    }

    [Fact]
    public void EveryChange_MovesTheVersion()
    {
        var tracker = Consuming("orders");
        var before = tracker.Version;

        tracker.Started();

        Assert.NotEqual(before, tracker.Version);
    }

    private DeliveryTracker Consuming(string queue)
    {
        var tracker = new DeliveryTracker(_clock);
        tracker.Consuming(queue);
        return tracker;
    }
}
