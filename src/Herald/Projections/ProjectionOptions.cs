namespace Herald.Projections;

/// <summary>How async projections run.</summary>
public sealed class ProjectionOptions
{
    /// <summary>How many events one read of the global log fetches.</summary>
    public int BatchSize { get; set; } = 500;

    /// <summary>How often a node that does not lead a projection tries to take it over, and a failed runner starts again.</summary>
    public TimeSpan RetryInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>A projection behind the head that has not moved for this long is reported stalled.</summary>
    public TimeSpan StallAfter { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How often the lag gauge and the stall check are refreshed.</summary>
    public TimeSpan StatusInterval { get; set; } = TimeSpan.FromSeconds(5);
}
