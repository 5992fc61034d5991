namespace Herald.Projections;

/// <summary>
/// The async projections that wait on the clock for a delayed retry of an event, or for their runner to start again after
/// a failure, for the test harness's idleness and time steps (Herald.Testing): such a projection is behind the store, yet
/// only moving the clock makes it go on.
/// </summary>
internal sealed class ProjectionRetryWaits
{
    private readonly Lock _gate = new();
    private readonly List<(string Projection, DateTimeOffset Until)> _waits = [];
    private long _version;

    /// <summary>Moves on every change, so a caller can tell that nothing happened between two looks.</summary>
    public long Version
    {
        get
        {
            lock (_gate)
            {
                return _version;
            }
        }
    }

    /// <summary>Waits <paramref name="delay"/> on <paramref name="time"/> for a retry of <paramref name="projection"/>, noted while it waits.</summary>
    public async Task DelayAsync(string projection, TimeSpan delay, TimeProvider time, CancellationToken cancellationToken)
    {
        // The timer first, then its time noted: noted first, a test could move the clock to that time before the timer
        // exists, and the timer would then fire a delay after it. Read after, the time is at or past the timer's.
        var timer = Task.Delay(delay, time, cancellationToken);
        var wait = (projection, time.GetUtcNow() + delay);
        lock (_gate)
        {
            _waits.Add(wait);
            _version++;
        }

        try
        {
            await timer.ConfigureAwait(false);
        }
        finally
        {
            lock (_gate)
            {
                _waits.Remove(wait);
                _version++;
            }
        }
    }

    /// <summary>The earliest time after <paramref name="now"/> at which a waiting retry runs; null when none waits for a later time.</summary>
    public DateTimeOffset? NextWake(DateTimeOffset now)
    {
        lock (_gate)
        {
            return _waits.Where(w => w.Until > now).Select(w => (DateTimeOffset?)w.Until).Min();
        }
    }

    /// <summary>True when <paramref name="projection"/> waits for a retry due after <paramref name="now"/>.</summary>
    public bool Waits(string projection, DateTimeOffset now)
    {
        lock (_gate)
        {
            return _waits.Exists(w => w.Until > now && string.Equals(w.Projection, projection, StringComparison.Ordinal));
        }
    }
}
