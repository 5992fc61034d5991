namespace Herald.Conformance;

/// <summary>
/// The system's timers and timestamps, but a current time the test sets (at any offset, to the tick): for a store that
/// stamps rows with its clock's time and also waits on that clock (a group commit delay, a recheck interval), which a
/// <c>FakeTimeProvider</c> nobody advances would hold for ever.
/// </summary>
public sealed class ClockShowing(DateTimeOffset now) : TimeProvider
{
    /// <summary>What <see cref="GetUtcNow"/> answers.</summary>
    public DateTimeOffset Now { get; set; } = now;

    /// <inheritdoc />
    public override DateTimeOffset GetUtcNow() => Now;
}
