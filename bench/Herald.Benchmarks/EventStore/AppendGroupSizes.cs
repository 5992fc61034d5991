using System.Diagnostics.Metrics;
using System.Globalization;

namespace Herald.Benchmarks.EventStore;

/// <summary>
/// How many appends the PostgreSQL append coordinator commits together (its group size histogram on Herald's meter),
/// counted only while armed: issue 9's throughput is bounded by what one commit costs, so the distribution shows how well
/// concurrent writers share commits on the machine the bench runs on.
/// </summary>
internal sealed class AppendGroupSizes : IDisposable
{
    // The histogram the PostgreSQL store's append coordinator records once per grouped commit (AppendCoordinator.GroupSizeMetric).
    private const string Metric = "herald.event_store.append_group.size";
    private const int Largest = 64;

    private readonly MeterListener _listener = new();
    private readonly long[] _counts = new long[Largest + 2];
    private volatile bool _armed;

    public AppendGroupSizes()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "Herald" && instrument.Name == Metric)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<int>((_, size, _, _) =>
        {
            if (_armed)
            {
                Interlocked.Increment(ref _counts[Math.Clamp(size, 0, Largest + 1)]);
            }
        });
        _listener.Start();
    }

    /// <summary>Counts the groups committed while <paramref name="run"/> runs.</summary>
    public async Task CountDuringAsync(Func<Task> run)
    {
        _armed = true;
        try
        {
            await run();
        }
        finally
        {
            _armed = false;
        }
    }

    /// <summary>One line: groups, appends per group, and the share of groups by size; null when none was counted.</summary>
    public string? Describe()
    {
        var groups = _counts.Sum();
        if (groups == 0)
        {
            return null;
        }

        var appends = _counts.Select((count, size) => count * size).Sum();
        string Share(int from, int to) => ((double)_counts[from..(to + 1)].Sum() / groups).ToString("P0", CultureInfo.InvariantCulture);
        var sixteenUp = ((double)_counts[16..].Sum() / groups).ToString("P0", CultureInfo.InvariantCulture);
        return string.Create(CultureInfo.InvariantCulture,
            $"{groups:N0} commits for {appends:N0} appends, {(double)appends / groups:0.0} appends per commit; groups of 1: {Share(1, 1)}, 2–4: {Share(2, 4)}, 5–8: {Share(5, 8)}, 9–15: {Share(9, 15)}, 16 or more: {sixteenUp}");
    }

    public void Dispose() => _listener.Dispose();
}
