namespace Herald.EventSourcing;

/// <summary>The argument checks every checkpoint store runs, so all stores refuse and find the same subscription ids.</summary>
public static class CheckpointValidation
{
    /// <summary>
    /// Throws an <see cref="ArgumentException"/> for an empty or blank subscription id or one holding half of a surrogate pair,
    /// and an <see cref="ArgumentOutOfRangeException"/> for a negative position.
    /// </summary>
    public static void Validate(string subscriptionId, long position)
    {
        if (!CanBeStored(subscriptionId))
        {
            // SQLite stored it as U+FFFD, so two such ids shared one checkpoint (one subscription skipped what the other
            // handled); PostgreSQL's client could not encode it.
            throw new ArgumentException(
                $"The subscription id '{StreamName.Printable(subscriptionId)}' holds half of a surrogate pair (as when a name is cut inside an emoji); no store can keep it as written.",
                nameof(subscriptionId));
        }

        ArgumentOutOfRangeException.ThrowIfNegative(position);
    }

    /// <summary>
    /// Throws an <see cref="ArgumentException"/> for an empty or blank subscription id; false when no checkpoint can be stored
    /// under it (it holds half of a surrogate pair), so a lookup of it finds none.
    /// </summary>
    public static bool CanBeStored(string subscriptionId)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(subscriptionId);
        return !StreamName.HoldsUnpairedSurrogate(subscriptionId);
    }
}
