namespace Herald.Conformance;

/// <summary>
/// Starves the thread pool until disposed: more work items than it has threads, each blocking until the end, so anything
/// else queued meanwhile (timer callbacks, continuations) waits. The pool adds threads only slowly while starved, and each
/// new one takes another blocker, so it stays starved for seconds.
/// </summary>
public sealed class ThreadPoolStarvation : IDisposable
{
    private readonly ManualResetEventSlim _release = new(false);

    /// <summary>Queues <paramref name="blockers"/> blocking work items.</summary>
    public ThreadPoolStarvation(int blockers = 256)
    {
        for (var i = 0; i < blockers; i++)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static s => ((ManualResetEventSlim)s!).Wait(), _release, preferLocal: false);
        }
    }

    /// <summary>Lets every blocker go.</summary>
    public void Dispose() => _release.Set();
}
