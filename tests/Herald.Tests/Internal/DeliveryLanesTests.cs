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
}
