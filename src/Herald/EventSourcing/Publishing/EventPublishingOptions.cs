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

    // A zero delay stayed zero when doubled, so a failing transport was retried in a busy loop; a negative one threw.
    internal static void Check(EventPublishingOptions options, Herald.Internal.OptionsProblems problems)
    {
        if (string.IsNullOrWhiteSpace(options.SubscriptionId))
        {
            problems.Add(nameof(SubscriptionId), "is empty; it names the publisher's checkpoint.");
        }

        problems.Positive(nameof(RetryDelay), options.RetryDelay);
        problems.Positive(nameof(MaxRetryDelay), options.MaxRetryDelay);
        problems.AddMessages(Hosting.OptionLimits.Waits(nameof(EventPublishingOptions), (nameof(RetryDelay), options.RetryDelay), (nameof(MaxRetryDelay), options.MaxRetryDelay)));
    }
}
