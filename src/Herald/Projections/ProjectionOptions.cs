using Herald.Hosting;

namespace Herald.Projections;

/// <summary>How async projections run.</summary>
public sealed class ProjectionOptions
{
    /// <summary>How many events one read of the global log fetches.</summary>
    public int BatchSize { get; set; } = 500;

    /// <summary>
    /// At most how many events an async projection applies in one unit of work (one commit, one checkpoint) while it is
    /// behind; 1 commits each event on its own. A batch that fails is rolled back and its events run again one by one.
    /// </summary>
    public int CommitEvery { get; set; } = 500;

    /// <summary>How often a node that does not lead a projection tries to take it over, and a failed runner starts again.</summary>
    public TimeSpan RetryInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>A projection behind the head that has not moved for this long is reported stalled.</summary>
    public TimeSpan StallAfter { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How often the lag gauge and the stall check are refreshed.</summary>
    public TimeSpan StatusInterval { get; set; } = TimeSpan.FromSeconds(5);

    internal IEnumerable<string> Validate()
    {
        if (BatchSize < 1)
        {
            yield return $"ProjectionOptions.BatchSize must be at least 1, not {BatchSize}.";
        }

        if (CommitEvery < 1)
        {
            yield return $"ProjectionOptions.CommitEvery must be at least 1 (1 commits each event on its own), not {CommitEvery}.";
        }

        if (RetryInterval <= TimeSpan.Zero)
        {
            yield return $"ProjectionOptions.RetryInterval must be positive, not {RetryInterval}.";
        }

        if (StallAfter <= TimeSpan.Zero)
        {
            yield return $"ProjectionOptions.StallAfter must be positive, not {StallAfter}.";
        }

        if (StatusInterval <= TimeSpan.Zero)
        {
            yield return $"ProjectionOptions.StatusInterval must be positive, not {StatusInterval}.";
        }

        foreach (var problem in OptionLimits.Waits(nameof(ProjectionOptions), (nameof(RetryInterval), RetryInterval), (nameof(StallAfter), StallAfter), (nameof(StatusInterval), StatusInterval)))
        {
            yield return problem;
        }
    }
}
