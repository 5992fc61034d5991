using Herald.Messages;

namespace Herald.Internal;

/// <summary>
/// The form in which every store keeps a time, an envelope's <see cref="Envelope.Time"/> and its own (created, due,
/// failed, sent): the instant in UTC, cut to the microsecond, which is what PostgreSQL's <c>timestamptz</c> holds; so a row
/// read back is equal on every engine.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class StoredTime
{
    /// <summary>
    /// The instant of <paramref name="time"/> in UTC, cut (not rounded) to the microsecond; the end of time stays itself,
    /// as PostgreSQL keeps it (infinity).
    /// </summary>
    public static DateTimeOffset Of(DateTimeOffset time)
    {
        var ticks = time.UtcTicks;
        return ticks == DateTimeOffset.MaxValue.UtcTicks
            ? DateTimeOffset.MaxValue
            : new DateTimeOffset(ticks - (ticks % TimeSpan.TicksPerMicrosecond), TimeSpan.Zero);
    }

    /// <summary>The stored form of <paramref name="time"/> (see <see cref="Of(DateTimeOffset)"/>), or null.</summary>
    public static DateTimeOffset? Of(DateTimeOffset? time) => time is { } value ? Of(value) : null;

    /// <summary>Whether <paramref name="time"/> already is in the form every store keeps (UTC, whole microseconds, or the end of time).</summary>
    internal static bool IsStored(DateTimeOffset time) =>
        time.Offset == TimeSpan.Zero && (time.UtcTicks % TimeSpan.TicksPerMicrosecond == 0 || time.UtcTicks == DateTimeOffset.MaxValue.UtcTicks);

    /// <summary>Whether <paramref name="time"/> is null or already in the form every store keeps.</summary>
    internal static bool IsStored(DateTimeOffset? time) => time is not { } value || IsStored(value);

    /// <summary>
    /// <paramref name="envelope"/> with its time as every store keeps it: the same instance when it is in that form already
    /// (always for an envelope the EnvelopeFactory made), so the usual write allocates nothing.
    /// </summary>
    internal static Envelope Of(Envelope envelope) => IsStored(envelope.Time) ? envelope : envelope with { Time = Of(envelope.Time) };
}
