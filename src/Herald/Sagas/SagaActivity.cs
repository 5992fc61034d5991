namespace Herald.Sagas;

/// <summary>
/// The orchestrated saga runs this process has under way, for the test harness's idleness (Herald.Testing): a run counts
/// from its start (or from being queued once its unit of work committed) until it ends, except while it waits for a
/// delayed retry whose time the clock has not reached, since only moving the clock makes it go on.
/// </summary>
internal sealed class SagaActivity
{
    private readonly Lock _gate = new();
    private readonly List<DateTimeOffset> _waits = [];
    private int _runs;
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

    public void Started() => Change(runs: 1);

    public void Ended() => Change(runs: -1);

    /// <summary>A run waits for a delayed retry due at <paramref name="until"/>; hand the same time to <see cref="Woke"/>.</summary>
    public void Waiting(DateTimeOffset until)
    {
        lock (_gate)
        {
            _waits.Add(until);
            _version++;
        }
    }

    public void Woke(DateTimeOffset until)
    {
        lock (_gate)
        {
            _waits.Remove(until);
            _version++;
        }
    }

    /// <summary>The earliest time after <paramref name="now"/> at which a waiting run goes on; null when none waits for a later time.</summary>
    public DateTimeOffset? NextWake(DateTimeOffset now)
    {
        lock (_gate)
        {
            return _waits.Where(until => until > now).Select(until => (DateTimeOffset?)until).Min();
        }
    }

    /// <summary>How many runs go on at <paramref name="now"/> without the clock moving.</summary>
    public int Busy(DateTimeOffset now)
    {
        lock (_gate)
        {
            return _runs - _waits.Count(until => until > now);
        }
    }

    private void Change(int runs)
    {
        lock (_gate)
        {
            _runs += runs;
            _version++;
        }
    }
}
