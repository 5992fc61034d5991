using Herald.Hosting;

namespace Herald.Reliability.Inbox;

/// <summary>Settings of the inbox, turned on with <c>h.UseInbox(o => ...)</c>; validated at start.</summary>
public sealed class InboxOptions
{
    /// <summary>How long a handled message id is remembered; a duplicate arriving later runs again. Default 1 hour.</summary>
    public TimeSpan Window { get; set; } = TimeSpan.FromHours(1);

    /// <summary>The endpoints that skip duplicates; empty (the default) means every endpoint of this host.</summary>
    public ISet<string> Endpoints { get; } = new HashSet<string>(StringComparer.Ordinal);

    /// <summary>How often expired marks are deleted. Default 1 minute.</summary>
    public TimeSpan CleanupInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Most marks deleted per round trip during cleanup. Default 1,000.</summary>
    public int CleanupBatchSize { get; set; } = 1000;

    internal bool IsEnabledFor(string endpoint) => Endpoints.Count == 0 || Endpoints.Contains(endpoint);

    internal IEnumerable<string> Validate()
    {
        if (Window <= TimeSpan.Zero)
        {
            yield return $"InboxOptions.Window must be positive, not {Window}.";
        }

        if (CleanupInterval <= TimeSpan.Zero)
        {
            yield return $"InboxOptions.CleanupInterval must be positive, not {CleanupInterval}.";
        }

        if (CleanupBatchSize < 1)
        {
            yield return $"InboxOptions.CleanupBatchSize must be at least 1, not {CleanupBatchSize}.";
        }

        var tooLong = OptionLimits.Waits(nameof(InboxOptions), (nameof(CleanupInterval), CleanupInterval))
            .Concat(OptionLimits.Spans(nameof(InboxOptions), (nameof(Window), Window)));
        foreach (var problem in tooLong)
        {
            yield return problem;
        }
    }
}
