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

    /// <summary>
    /// UTC ticks as a <see cref="DateTimeOffset"/>, cut at its <see cref="DateTimeOffset.MinValue"/> and
    /// <see cref="DateTimeOffset.MaxValue"/>: a window of an event near either end may begin before the first tick or end
    /// after the last, and making it must not throw (from a timer, that would leave the window unclosed for good).
    /// </summary>
    public static DateTimeOffset ToOffset(long time) =>
        new(Math.Clamp(time, DateTimeOffset.MinValue.UtcTicks, DateTimeOffset.MaxValue.UtcTicks), TimeSpan.Zero);

    /// <summary>The window from <paramref name="start"/> to <paramref name="end"/> (UTC ticks), cut as <see cref="ToOffset"/> cuts.</summary>
    public static TimeWindow Window(long start, long end) => new(ToOffset(start), ToOffset(end));
}
