using System.Collections.Concurrent;
using System.Diagnostics;
using Herald.Conformance;
using Herald.Internal;

namespace Herald.Tests.Internal;

public sealed class DeliveryLanesTests
{
    // An inline run never counts as long: a run the machine preempts must not send the items after it to the workers.
    private static readonly TimeSpan NoLimit = TimeSpan.MaxValue;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ItemsOfOneKey_AreHandledOneAtATime_InTheOrderWritten_WhileOtherKeysRunBesideThem(bool runInline)
    {
        var lanes = new DeliveryLanes<(string Key, int Seq)>(concurrency: 4, prefetch: 64, runInline);
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

    [Fact]
    public async Task Inline_AnItemWhoseWorkerIsIdle_RunsOnTheWriter_BeforeWriteAsyncReturns()
    {
        var lanes = new DeliveryLanes<int>(concurrency: 2, prefetch: 16, runInline: true, NoLimit);
        var writer = new WriterProbe();
        var inline = 0;
        using var stop = new CancellationTokenSource();
        var running = lanes.RunAsync(
            item =>
            {
                if (writer.IsWriting)
                {
                    Interlocked.Increment(ref inline);
                }

                return ValueTask.CompletedTask;
            },
            stop.Token);
        await writer.WarmUpAsync(lanes, () => Volatile.Read(ref inline));

        // Once a worker is parked, every item without a key runs on the writer while it writes.
        for (var i = 1; i <= 100; i++)
        {
            var before = Volatile.Read(ref inline);
            await writer.WriteAsync(lanes, i, null);
            Assert.Equal(before + 1, Volatile.Read(ref inline));
        }

        // An item with a key does once the worker of its key's lane is parked.
        foreach (var key in new[] { "a", "b", "c", "d", "e" })
        {
            await Eventually.UntilAsync(
                async () =>
                {
                    var before = Volatile.Read(ref inline);
                    await writer.WriteAsync(lanes, 101, key);
                    return Volatile.Read(ref inline) > before;
                },
                $"an item of key {key} runs inline");
        }

        await stop.CancelAsync();
        await running.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Empty(lanes.TakeLeftovers());
    }

    [Fact]
    public async Task Inline_AHandlerThatWaits_FreesTheWriter_AndItemsBehindItRunAfterIt_InOrder_NeverTwoAtOnce()
    {
        var lanes = new DeliveryLanes<int>(concurrency: 1, prefetch: 8, runInline: true, NoLimit);
        var writer = new WriterProbe();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var order = new ConcurrentQueue<int>();
        var inline = 0;
        var running = 0;
        var most = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stop = new CancellationTokenSource();
        var workers = lanes.RunAsync(
            async item =>
            {
                if (writer.IsWriting)
                {
                    Interlocked.Increment(ref inline);
                }

                Interlocks.Max(ref most, Interlocked.Increment(ref running));
                if (item == 1)
                {
                    await release.Task;
                }

                Interlocked.Decrement(ref running);
                if (item > 0)
                {
                    order.Enqueue(item);
                }

                if (item == 3)
                {
                    done.SetResult();
                }
            },
            stop.Token);
        await writer.WarmUpAsync(lanes, () => Volatile.Read(ref inline));

        // 1 runs on the writer until it waits, and WriteAsync returns; 2 (same key) and 3 (none) wait behind it.
        Assert.True(lanes.WriteAsync(1, "k", CancellationToken.None).IsCompletedSuccessfully);
        await lanes.WriteAsync(2, "k", CancellationToken.None);
        await lanes.WriteAsync(3, null, CancellationToken.None);
        Assert.Empty(order);

        release.SetResult();
        await done.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal([1, 2, 3], order);
        Assert.Equal(1, most);
        await stop.CancelAsync();
        await workers.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Empty(lanes.TakeLeftovers());
    }

    [Fact]
    public async Task Inline_AfterHandlersKeptTheWriterLongTwiceRunning_TheNextItemsGoToTheWorkers()
    {
        // Items 1 and 2 compute for 2 ms each, past the 1 ms limit; once both ran inline, the items after them are queued.
        var (inline, handled) = await RunInlineAsync(long1: 1, long2: 2, last: 10);

        Assert.Equal(9, handled);
        Assert.DoesNotContain(inline, item => item >= 3);
    }

    [Fact]
    public async Task Inline_OneLongRunAlone_AsWhenTheWritersThreadWasPreempted_DoesNotStopTheInlineRuns()
    {
        // Only item 1 is long (the writer's thread losing its core for a while looks the same): every item after it still
        // finds an idle worker, so each still runs inline. It used to send the next 256 items a worker to the workers.
        var (inline, handled) = await RunInlineAsync(long1: 1, long2: null, last: 10);

        Assert.Equal(9, handled);
        Assert.Equal(Enumerable.Range(2, 9), inline.Where(item => item >= 2).Order());
    }

    /// <summary>
    /// Writes 1 (until it ran inline), then 2 to <paramref name="last"/> one at a time, each once the one before was handled
    /// (so a worker is always idle); the items <paramref name="long1"/> and <paramref name="long2"/> compute for 2 ms
    /// against an inline limit of 1 ms. Returns the items that ran on the writer's thread and how many of 2.. were handled.
    /// </summary>
    private static async Task<(List<int> Inline, int Handled)> RunInlineAsync(int long1, int? long2, int last)
    {
        var lanes = new DeliveryLanes<int>(concurrency: 2, prefetch: 16, runInline: true, TimeSpan.FromMilliseconds(1));
        var writer = new WriterProbe();
        var inline = new ConcurrentQueue<int>();
        var handled = 0;
        using var stop = new CancellationTokenSource();
        var running = lanes.RunAsync(
            item =>
            {
                if (writer.IsWriting)
                {
                    inline.Enqueue(item);
                }

                if (item == long1 || item == long2)
                {
                    // Work of its own, not a wait: it holds whoever runs it.
                    var spin = Stopwatch.StartNew();
                    while (spin.Elapsed < TimeSpan.FromMilliseconds(2))
                    {
                        Thread.SpinWait(100);
                    }
                }

                if (item >= 2)
                {
                    Interlocked.Increment(ref handled);
                }

                return ValueTask.CompletedTask;
            },
            stop.Token);
        await Eventually.UntilAsync(
            async () =>
            {
                await writer.WriteAsync(lanes, 1, null);
                return inline.Contains(1);
            },
            "the first item runs inline");
        for (var i = 2; i <= last; i++)
        {
            await writer.WriteAsync(lanes, i, null);
            var expected = i - 1;
            await Eventually.UntilAsync(() => Volatile.Read(ref handled) == expected, $"item {i} is handled");
        }

        await stop.CancelAsync();
        await running.WaitAsync(TimeSpan.FromSeconds(10));
        return ([.. inline], Volatile.Read(ref handled));
    }

    [Fact]
    public async Task Inline_StoppingWhileAnInlineHandlerWaits_EndsTheWorkersOnlyOnceItIsDone()
    {
        var lanes = new DeliveryLanes<int>(concurrency: 1, prefetch: 4, runInline: true, NoLimit);
        var writer = new WriterProbe();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var inline = 0;
        var finished = false;
        using var stop = new CancellationTokenSource();
        var running = lanes.RunAsync(
            async item =>
            {
                if (writer.IsWriting)
                {
                    Interlocked.Increment(ref inline);
                }

                if (item == 1)
                {
                    await release.Task;
                    finished = true;
                }
            },
            stop.Token);
        await writer.WarmUpAsync(lanes, () => Volatile.Read(ref inline));

        Assert.True(lanes.WriteAsync(1, null, CancellationToken.None).IsCompletedSuccessfully);
        await lanes.WriteAsync(2, null, CancellationToken.None);
        await stop.CancelAsync();
        Assert.False(running.IsCompleted);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => lanes.WriteAsync(3, null, CancellationToken.None).AsTask());

        release.SetResult();
        await running.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(finished);
        Assert.Equal([2], lanes.TakeLeftovers());
    }

    /// <summary>Tells a handler whether it runs inside a write, on the writer's thread: inline.</summary>
    private sealed class WriterProbe
    {
        private int _thread;

        public bool IsWriting => Environment.CurrentManagedThreadId == Volatile.Read(ref _thread);

        public async ValueTask WriteAsync(DeliveryLanes<int> lanes, int item, string? key)
        {
            Volatile.Write(ref _thread, Environment.CurrentManagedThreadId);
            var written = lanes.WriteAsync(item, key, CancellationToken.None);
            Volatile.Write(ref _thread, 0);
            await written;
        }

        // Writes item 0 until one runs inline (the workers are parked by then); inlineCount counts the inline runs.
        public Task WarmUpAsync(DeliveryLanes<int> lanes, Func<int> inlineCount) =>
            Eventually.UntilAsync(
                async () =>
                {
                    var before = inlineCount();
                    await WriteAsync(lanes, 0, null);
                    return inlineCount() > before;
                },
                "an item runs inline");
    }
}
