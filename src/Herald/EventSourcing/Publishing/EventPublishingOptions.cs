namespace Herald.EventSourcing.Publishing;

/// <summary>Settings of the hosted service that publishes stored events to the bus.</summary>
public sealed class EventPublishingOptions
{
    /// <summary>The checkpoint name of the publishing subscription.</summary>
    public string SubscriptionId { get; set; } = "herald-event-publisher";

    /// <summary>Which events to publish (all by default).</summary>
    public EventFilter? Filter { get; set; }

    /// <summary>First delay before publishing again while the transport refuses; it doubles up to <see cref="MaxRetryDelay"/>.</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Longest delay between publish attempts.</summary>
    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromSeconds(30);
}
