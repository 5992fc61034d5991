using System.Collections.Concurrent;

namespace Herald.Sqlite.Transport;

/// <summary>Wakes this process's consumers of a queue after a commit that may have made a message claimable there.</summary>
internal sealed class QueueSignals
{
    private readonly ConcurrentDictionary<string, Signal> _signals = new(StringComparer.Ordinal);

    /// <summary>Completes at the next <see cref="Pulse"/> of the queue; take it before looking at the queue, so no commit falls between.</summary>
    public Task Next(string queue) => _signals.GetOrAdd(queue, static _ => new Signal()).Next;

    public void Pulse(string queue)
    {
        if (_signals.TryGetValue(queue, out var signal))
        {
            signal.Pulse();
        }
    }

    /// <summary>A task that completes when pulsed; each pulse starts a new one.</summary>
    internal sealed class Signal
    {
        private TaskCompletionSource _next = New();

        public Task Next => Volatile.Read(ref _next).Task;

        public void Pulse() => Interlocked.Exchange(ref _next, New()).TrySetResult();

        private static TaskCompletionSource New() => new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
