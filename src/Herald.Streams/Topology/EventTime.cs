namespace Herald.Streams.Topology;

/// <summary>Event-time arithmetic on UTC ticks.</summary>
internal static class EventTime
{
    /// <summary>
    /// <paramref name="time"/> plus the non-negative <paramref name="spans"/> (a window's grace, gap, retention), stopping at
    /// <see cref="long.MaxValue"/>: a grace or retention of <see cref="TimeSpan.MaxValue"/> means never, not a wrapped-around
    /// negative time that every watermark has passed.
    /// </summary>
    public static long Plus(long time, params ReadOnlySpan<long> spans)
    {
        foreach (var span in spans)
        {
            time = time > long.MaxValue - span ? long.MaxValue : time + span;
        }

        return time;
    }
}
