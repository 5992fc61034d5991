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
        ArgumentException.ThrowIfNullOrWhiteSpace(subscriptionId);

        // SQLite stored it as U+FFFD, so two such ids shared one checkpoint (one subscription skipped what the other
        // handled); PostgreSQL's client could not encode it.
        StreamName.ThrowIfHoldsUnpairedSurrogate(subscriptionId, "subscription id", nameof(subscriptionId));
        ArgumentOutOfRangeException.ThrowIfNegative(position);
    }

    /// <summary>
    /// Throws an <see cref="ArgumentException"/> for a subscription's options no store can follow: its id (as
    /// <see cref="Validate(string, long)"/>) or its filter's category or event types holding half of a surrogate pair.
    /// </summary>
    internal static void Validate(string subscriptionId, EventFilter? filter, string paramName)
    {
        StreamName.ThrowIfHoldsUnpairedSurrogate(subscriptionId, "subscription id", paramName);

        // PostgreSQL's client cannot encode such a filter, so every read of the log failed and was retried as an outage.
        if (filter?.Category is { } category)
        {
            StreamName.ThrowIfHoldsUnpairedSurrogate(category, "filter's category", paramName);
        }

        foreach (var eventType in filter?.EventTypes ?? [])
        {
            StreamName.ThrowIfHoldsUnpairedSurrogate(eventType, "filter's event type", paramName);
        }
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
