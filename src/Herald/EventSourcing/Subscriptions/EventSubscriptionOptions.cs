using Herald.Reliability.DeadLetters;

namespace Herald.EventSourcing.Subscriptions;

/// <summary>What an <see cref="EventSubscription"/> follows and how often it saves its checkpoint.</summary>
public sealed record EventSubscriptionOptions
{
    /// <summary>The name its checkpoint is stored under; one running subscription per id.</summary>
    public required string SubscriptionId { get; init; }

    /// <summary>Only events passing this filter reach the handler; null follows all of <c>$all</c>.</summary>
    public EventFilter? Filter { get; init; }

    /// <summary>Where to start when no checkpoint is stored: the position after which to begin (0 = the start of the log).</summary>
    public long StartAfterPosition { get; init; }

    /// <summary>How many events one read of the global log fetches.</summary>
    public int BatchSize { get; init; } = 500;

    /// <summary>
    /// Save the checkpoint after this many handled events while catching up (1 = after each); it is also saved whenever
    /// the subscription is caught up, on stop and on failure. A crash replays at most this many events (at least once).
    /// </summary>
    public int CheckpointEvery { get; init; } = 100;

    /// <summary>
    /// Where a stored event that no longer reads (an <see cref="UnreadableEventException"/>) goes, with its position, stream,
    /// type and bytes, so the subscription moves past it; null (the default) stops the subscription on it instead.
    /// </summary>
    public IDeadLetterStore? DeadLetterUnreadableEventsTo { get; init; }
}
