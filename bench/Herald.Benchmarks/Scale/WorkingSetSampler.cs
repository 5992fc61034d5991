namespace Herald.Benchmarks.Scale;

/// <summary>Samples the process's working set every few milliseconds while it runs and keeps the highest value.</summary>
internal sealed class WorkingSetSampler : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private long _peak = Environment.WorkingSet;

    public WorkingSetSampler() => _loop = Task.Run(LoopAsync);

    /// <summary>The highest working set seen so far, in bytes.</summary>
    public long Peak => Math.Max(Volatile.Read(ref _peak), Environment.WorkingSet);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _loop;
        _stop.Dispose();
    }

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            var now = Environment.WorkingSet;
            if (now > Volatile.Read(ref _peak))
            {
                Volatile.Write(ref _peak, now);
            }

            try
            {
                await Task.Delay(10, _stop.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }
}
