namespace Herald.EventSourcing;

/// <summary>The argument checks every snapshot store runs on a save, so all stores refuse the same snapshots.</summary>
public static class SnapshotValidation
{
    /// <summary>
    /// Throws an <see cref="ArgumentException"/> for a snapshot with an invalid stream name or a null or empty state type or
    /// one holding half of a surrogate pair, and an <see cref="ArgumentOutOfRangeException"/> for a version below 1.
    /// </summary>
    public static void Validate(Snapshot snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        StreamName.Validate(snapshot.Stream);
        ArgumentOutOfRangeException.ThrowIfLessThan(snapshot.Version, 1, nameof(snapshot));

        // A loaded snapshot is used only when its state type is the aggregate's: one without a name could never be. The
        // in-memory store kept null and "", SQLite "" only, and PostgreSQL refused both.
        if (string.IsNullOrEmpty(snapshot.StateType))
        {
            throw new ArgumentException(
                $"The snapshot of '{snapshot.Stream}' at version {snapshot.Version} has no state type; give the stable name of its state's type, which a load checks.",
                nameof(snapshot));
        }

        // The in-memory store and SQLite took it (SQLite writes U+FFFD in its place), PostgreSQL's client threw an
        // EncoderFallbackException: refused alike up front, as the other names the stores keep.
        StreamName.ThrowIfHoldsUnpairedSurrogate(snapshot.StateType, "snapshot's state type", nameof(snapshot));
    }
}
