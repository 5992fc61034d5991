namespace Herald.Conformance;

/// <summary>
/// Loads the thread pool until disposed: a thread of its own keeps <c>backlog</c> work items queued, each holding a pool
/// thread for <c>hold</c> without using the CPU, so everything else queued meanwhile (timer callbacks, continuations) waits
/// behind them. With an infinite hold it starves the pool outright: the pool adds threads only slowly, and each new one
/// takes another blocker.
/// </summary>
public sealed class ThreadPoolStarvation : IDisposable
{
    private readonly ManualResetEventSlim _stopped = new(false);
    private readonly SemaphoreSlim _finished = new(0);
    private readonly TimeSpan _hold;
    private readonly Thread? _refill;

    /// <summary>Queues <paramref name="backlog"/> items holding a thread for <paramref name="hold"/> each (until disposed by default), and keeps as many queued.</summary>
    public ThreadPoolStarvation(int backlog = 256, TimeSpan? hold = null)
    {
        _hold = hold ?? Timeout.InfiniteTimeSpan;
        for (var i = 0; i < backlog; i++)
        {
            Queue();
        }

        if (hold is not null)
        {
            _refill = new Thread(Refill) { IsBackground = true, Name = "thread pool load" };
            _refill.Start();
        }
    }

    /// <summary>Lets every item go and stops queuing more.</summary>
    public void Dispose()
    {
        _stopped.Set();
        _finished.Release();
        _refill?.Join();
    }

    private void Queue() => ThreadPool.UnsafeQueueUserWorkItem(
        static s =>
        {
            s._stopped.Wait(s._hold);
            s._finished.Release();
        },
        this,
        preferLocal: false);

    private void Refill()
    {
        while (true)
        {
            _finished.Wait();
            if (_stopped.IsSet)
            {
                return;
            }

            Queue();
        }
    }
}
