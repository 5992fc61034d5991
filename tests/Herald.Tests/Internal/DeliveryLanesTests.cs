using System.Collections.Concurrent;
using Herald.Internal;

namespace Herald.Tests.Internal;

public sealed class DeliveryLanesTests
{
    [Fact]
    public async Task ItemsOfOneKey_AreHandledOneAtATime_InTheOrderWritten_WhileOtherKeysRunBesideThem()
    {
        var lanes = new DeliveryLanes<(string Key, int Seq)>(concurrency: 4, prefetch: 64);
        var inFlight = new ConcurrentDictionary<string, int>();
        var order = new ConcurrentDictionary<string, ConcurrentQueue<int>>();
        var overlaps = 0;
        var handled = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stop = new CancellationTokenSource();
        var running = lanes.RunAsync(async item =>
        {
            if (inFlight.AddOrUpdate(item.Key, 1, (_, n) => n + 1) > 1)
            {
                Interlocked.Increment(ref overlaps);
            }

            await Task.Yield();
            order.GetOrAdd(item.Key, _ => new ConcurrentQueue<int>()).Enqueue(item.Seq);
            inFlight.AddOrUpdate(item.Key, 0, (_, n) => n - 1);
            if (Interlocked.Increment(ref handled) == 200)
            {
                done.SetResult();
            }
        }, stop.Token);

        for (var i = 0; i < 50; i++)
        {
            foreach (var key in new[] { "a", "b", "c", "d" })
            {
                await lanes.WriteAsync((key, i), key, CancellationToken.None);
            }
        }

        await done.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await stop.CancelAsync();
        await running.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(0, overlaps);
        Assert.All(order.Values, seqs => Assert.Equal(Enumerable.Range(0, 50), seqs));
        Assert.Empty(lanes.TakeLeftovers());
    }

    [Fact]
    public async Task ItemsNoWorkerStarted_AreLeftForTheConsumerToHandBack()
    {
        var lanes = new DeliveryLanes<int>(concurrency: 1, prefetch: 8);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stop = new CancellationTokenSource();
        var running = lanes.RunAsync(async item =>
        {
            started.TrySetResult();
            await release.Task;
        }, stop.Token);

        for (var i = 0; i < 4; i++)
        {
            await lanes.WriteAsync(i, null, CancellationToken.None);
        }

        await started.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await stop.CancelAsync();
        release.SetResult();
        await running.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal([1, 2, 3], lanes.TakeLeftovers());
    }

    [Fact]
    public async Task ItemsWithoutAKey_AreTakenByAnyFreeWorker_WhileAnotherWorkerIsHeld()
    {
        // A worker that does not run (a slow handler, a thread not scheduled) must not hold up unkeyed items queued after
        // the one it runs, as workers sharing one channel would not (issue 13, the NATS consume rounds).
        var lanes = new DeliveryLanes<int>(concurrency: 2, prefetch: 16);
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var others = 0;
        var allOthers = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stop = new CancellationTokenSource();
        var running = lanes.RunAsync(async item =>
        {
            if (item == 0)
            {
                held.SetResult();
                await release.Task;
                return;
            }

            if (Interlocked.Increment(ref others) == 10)
            {
                allOthers.SetResult();
            }
        }, stop.Token);

        await lanes.WriteAsync(0, null, CancellationToken.None);
        await held.Task.WaitAsync(TimeSpan.FromSeconds(10));
        for (var i = 1; i <= 10; i++)
        {
            await lanes.WriteAsync(i, null, CancellationToken.None);
        }

        await allOthers.Task.WaitAsync(TimeSpan.FromSeconds(10));
        release.SetResult();
        await stop.CancelAsync();
        await running.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Empty(lanes.TakeLeftovers());
    }

    [Fact]
    public async Task WriteAsync_WaitsWhileEverySlotIsTaken_UntilAWorkerTakesOne_OrItsTokenOrTheStopEndsTheWait()
    {
        var lanes = new DeliveryLanes<int>(concurrency: 1, prefetch: 2);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stop = new CancellationTokenSource();
        var running = lanes.RunAsync(async item =>
        {
            first.TrySetResult();
            await release.Task;
        }, stop.Token);

        // The worker takes 0 and holds it; 1 and 2 fill both slots; 3 waits, until its token is cancelled.
        await lanes.WriteAsync(0, null, CancellationToken.None);
        await first.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await lanes.WriteAsync(1, null, CancellationToken.None);
        await lanes.WriteAsync(2, null, CancellationToken.None);
        using (var cancel = new CancellationTokenSource())
        {
            var cancelled = lanes.WriteAsync(3, null, cancel.Token).AsTask();
            Assert.False(cancelled.IsCompleted);
            await cancel.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.WaitAsync(TimeSpan.FromSeconds(10)));
        }

        // Written again, it waits until the worker takes 1.
        var third = lanes.WriteAsync(3, null, CancellationToken.None).AsTask();
        Assert.False(third.IsCompleted);
        release.SetResult();
        await third.WaitAsync(TimeSpan.FromSeconds(10));
        await stop.CancelAsync();
        await running.WaitAsync(TimeSpan.FromSeconds(10));

        // Full behind a held worker, then stopped: the waiting write ends as cancelled and takes nothing.
        var blocked = new DeliveryLanes<int>(concurrency: 1, prefetch: 1);
        var hold = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var blockedStop = new CancellationTokenSource();
        var blockedRunning = blocked.RunAsync(async _ =>
        {
            started.TrySetResult();
            await hold.Task;
        }, blockedStop.Token);
        await blocked.WriteAsync(10, null, CancellationToken.None);
        await started.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await blocked.WriteAsync(11, null, CancellationToken.None);
        var waiting = blocked.WriteAsync(12, null, CancellationToken.None).AsTask();
        Assert.False(waiting.IsCompleted);
        await blockedStop.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        hold.SetResult();
        await blockedRunning.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal([11], blocked.TakeLeftovers());
    }
}
