namespace Herald.EventSourcing;

/// <summary>The argument checks every checkpoint store runs, so all stores refuse and find the same subscription ids.</summary>
public static class CheckpointValidation
{
    /// <summary>
    /// Longest accepted subscription id, in characters, as for a stream name: at most 600 bytes of UTF-8, which every
    /// engine's index holds (PostgreSQL's refuses an entry past about 2.7 KB).
    /// </summary>
    public const int MaxSubscriptionIdLength = StreamName.MaxLength;

    /// <summary>
    /// Throws an <see cref="ArgumentException"/> for an empty or blank subscription id, one longer than
    /// <see cref="MaxSubscriptionIdLength"/> or one holding U+0000 or half of a surrogate pair, and an
    /// <see cref="ArgumentOutOfRangeException"/> for a negative position.
    /// </summary>
    public static void Validate(string subscriptionId, long position)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(subscriptionId);
        ThrowIfUnstorable(subscriptionId, nameof(subscriptionId));
        ArgumentOutOfRangeException.ThrowIfNegative(position);
    }

    /// <summary>
    /// Throws an <see cref="ArgumentException"/> for a subscription's options no store can follow: its id (as
    /// <see cref="Validate(string, long)"/>) or its filter's category or event types holding half of a surrogate pair.
    /// </summary>
    internal static void Validate(string subscriptionId, EventFilter? filter, string paramName)
    {
        // Else every checkpoint save of the subscription failed on PostgreSQL, retried as an outage for ever.
        ThrowIfUnstorable(subscriptionId, paramName);

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
    /// under it (<see cref="Validate(string, long)"/> refuses it), so a lookup of it finds none.
    /// </summary>
    public static bool CanBeStored(string subscriptionId)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(subscriptionId);
        return Refusal(subscriptionId) is null;
    }

    private static void ThrowIfUnstorable(string subscriptionId, string paramName)
    {
        if (Refusal(subscriptionId) is { } refusal)
        {
            throw new ArgumentException(refusal, paramName);
        }
    }

    // Why no store can keep a checkpoint under the id, the same on every engine; null when it can.
    private static string? Refusal(string subscriptionId)
    {
        if (subscriptionId.Length > MaxSubscriptionIdLength)
        {
            // PostgreSQL's index refuses an entry past about 2.7 KB.
            return $"The subscription id '{StreamName.Printable(subscriptionId[..40])}...' has {subscriptionId.Length} characters; at most {MaxSubscriptionIdLength} are allowed.";
        }

        if (subscriptionId.Contains('\0', StringComparison.Ordinal))
        {
            // PostgreSQL's text cannot hold it.
            return $"The subscription id '{StreamName.Printable(subscriptionId)}' holds U+0000, which not every store can keep.";
        }

        // SQLite stored it as U+FFFD, so two such ids shared one checkpoint (one subscription skipped what the other
        // handled); PostgreSQL's client could not encode it.
        return StreamName.HoldsUnpairedSurrogate(subscriptionId)
            ? $"The subscription id '{StreamName.Printable(subscriptionId)}' holds half of a surrogate pair (as when a name is cut inside an emoji); no store can keep it as written."
            : null;
    }
}
