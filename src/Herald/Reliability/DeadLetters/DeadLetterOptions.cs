using Herald.Hosting;

namespace Herald.Reliability.DeadLetters;

/// <summary>Dead-letter alerts and handling, set with <c>h.ConfigureDeadLetters(o => ...)</c>; validated at start.</summary>
public sealed class DeadLetterOptions
{
    /// <summary>An endpoint whose dead letters reach this count raises an alert (log, metric, <see cref="IDeadLetterAlert"/> hooks), again only after its count fell to half of this or below; 0 turns alerts off. Default 100.</summary>
    public int AlertThreshold { get; set; } = 100;

    /// <summary>Thresholds for single endpoints, overriding <see cref="AlertThreshold"/>.</summary>
    public IDictionary<string, int> EndpointAlertThresholds { get; } = new Dictionary<string, int>(StringComparer.Ordinal);

    /// <summary>How often the dead-letter counts (the <c>herald.dead_letters</c> gauge and the alerts) are refreshed from the store, besides after every change made here. Default 1 minute.</summary>
    public TimeSpan MonitorInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// When the store cannot take a dead letter and the transport's own dead letters cannot either (or it has none), the
    /// message is redelivered after this delay instead of being lost. Default 5 seconds.
    /// </summary>
    public TimeSpan StoreFailureRedeliveryDelay { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How often the transport's own dead letters (where a dead letter goes while the store is unreachable) are moved
    /// into the store; also done once at start. Default 30 seconds.
    /// </summary>
    public TimeSpan DrainInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How many dead letters retry-all and purge read or delete per round trip. Default 100.</summary>
    public int BatchSize { get; set; } = 100;

    /// <summary>
    /// Dead letters that last failed longer ago than this are deleted by the background trim (every
    /// <see cref="MonitorInterval"/>, for each endpoint the monitor knows); null (the default) keeps them until purged.
    /// </summary>
    public TimeSpan? MaxAge { get; set; }

    /// <summary>
    /// Most dead letters kept per endpoint: beyond it the oldest are deleted by the background trim (when a count finds
    /// more, and every <see cref="MonitorInterval"/>); null (the default) sets no limit.
    /// </summary>
    public int? MaxCount { get; set; }

    internal bool HasRetention => MaxAge is not null || MaxCount is not null;

    internal int ThresholdFor(string endpoint) => EndpointAlertThresholds.TryGetValue(endpoint, out var threshold) ? threshold : AlertThreshold;

    internal IEnumerable<string> Validate()
    {
        if (AlertThreshold < 0)
        {
            yield return $"DeadLetterOptions.AlertThreshold must be 0 (off) or more, not {AlertThreshold}.";
        }

        foreach (var (endpoint, threshold) in EndpointAlertThresholds)
        {
            if (threshold < 0)
            {
                yield return $"DeadLetterOptions.EndpointAlertThresholds['{endpoint}'] must be 0 (off) or more, not {threshold}.";
            }
        }

        if (MonitorInterval <= TimeSpan.Zero)
        {
            yield return $"DeadLetterOptions.MonitorInterval must be positive, not {MonitorInterval}.";
        }

        if (StoreFailureRedeliveryDelay < TimeSpan.Zero)
        {
            yield return $"DeadLetterOptions.StoreFailureRedeliveryDelay must not be negative, not {StoreFailureRedeliveryDelay}.";
        }

        if (DrainInterval <= TimeSpan.Zero)
        {
            yield return $"DeadLetterOptions.DrainInterval must be positive, not {DrainInterval}.";
        }

        if (MaxAge is { } maxAge && maxAge <= TimeSpan.Zero)
        {
            yield return $"DeadLetterOptions.MaxAge must be positive when set, not {maxAge}.";
        }

        if (MaxCount is < 0)
        {
            yield return $"DeadLetterOptions.MaxCount must be 0 or more when set, not {MaxCount}.";
        }

        if (BatchSize is < 1 or > DeadLetterQuery.MaxLimit)
        {
            yield return $"DeadLetterOptions.BatchSize must be between 1 and {DeadLetterQuery.MaxLimit}, not {BatchSize}.";
        }

        var tooLong = OptionLimits.Waits(nameof(DeadLetterOptions), (nameof(MonitorInterval), MonitorInterval), (nameof(StoreFailureRedeliveryDelay), StoreFailureRedeliveryDelay), (nameof(DrainInterval), DrainInterval))
            .Concat(OptionLimits.Spans(nameof(DeadLetterOptions), (nameof(MaxAge), MaxAge ?? TimeSpan.Zero)));
        foreach (var problem in tooLong)
        {
            yield return problem;
        }
    }
}
