namespace Herald.Internal;

/// <summary>
/// The form in which every store keeps an envelope's <see cref="Messages.Envelope.Time"/>: the instant in UTC, cut to the
/// microsecond, which is what PostgreSQL's <c>timestamptz</c> holds; so an event read back is equal on every engine.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class StoredTime
{
    /// <summary>The instant of <paramref name="time"/> in UTC, cut (not rounded) to the microsecond.</summary>
    public static DateTimeOffset Of(DateTimeOffset time)
    {
        var ticks = time.UtcTicks;
        return new DateTimeOffset(ticks - (ticks % TimeSpan.TicksPerMicrosecond), TimeSpan.Zero);
    }

    /// <summary>Whether <paramref name="time"/> already is in the form every store keeps (UTC, whole microseconds).</summary>
    internal static bool IsStored(DateTimeOffset time) => time.Offset == TimeSpan.Zero && time.UtcTicks % TimeSpan.TicksPerMicrosecond == 0;
}
