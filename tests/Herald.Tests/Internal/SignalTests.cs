using Herald.Internal;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Tests.Internal;

/// <summary>The core's signal primitive (issue 9).</summary>
public sealed class SignalTests
{
    [Fact]
    public async Task APulse_WakesTheWaitersOfTheTaskTakenBefore_AndALaterWaiterWaitsForTheNext()
    {
        var signal = new Signal();
        var before = signal.Next;

        signal.Pulse();

        await before.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(signal.Next.IsCompleted);
    }

    [Fact]
    public async Task WaitAsync_ReturnsFalseWhenTheClockPassesTheTimeout_AndTrueWhenPulsed()
    {
        var clock = new FakeTimeProvider();
        var signal = new Signal();
        var timingOut = Signal.WaitAsync(signal.Next, TimeSpan.FromSeconds(5), clock, CancellationToken.None);
        clock.Advance(TimeSpan.FromSeconds(5));
        Assert.False(await timingOut.WaitAsync(TimeSpan.FromSeconds(10)));

        var woken = Signal.WaitAsync(signal.Next, TimeSpan.FromSeconds(5), clock, CancellationToken.None);
        signal.Pulse();
        Assert.True(await woken.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task Close_FailsPresentAndFutureWaiters()
    {
        var signal = new PositionSignal();
        var waiting = signal.Next;

        signal.Close(new ObjectDisposedException("store"));

        await Assert.ThrowsAsync<ObjectDisposedException>(() => waiting);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => signal.Next);
    }

    [Fact]
    public void APositionSignal_KeepsTheHighestPosition()
    {
        var signal = new PositionSignal();
        signal.Publish(7);
        signal.Observe(3);
        Assert.Equal(7, signal.LastPosition);
        signal.Observe(9);
        Assert.Equal(9, signal.LastPosition);
    }

    [Fact]
    public async Task KeyedSignals_WakeOneKey_OrAll()
    {
        var signals = new KeyedSignals();
        var a = signals.Next("a");
        var b = signals.Next("b");

        signals.Pulse("a");
        await a.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(b.IsCompleted);

        signals.PulseAll();
        await b.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
