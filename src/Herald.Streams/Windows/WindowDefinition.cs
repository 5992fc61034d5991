namespace Herald.Streams;

/// <summary>
/// How a grouped stream is cut into event-time windows: <see cref="TumblingWindows"/>, <see cref="HoppingWindows"/> or
/// <see cref="SessionWindows"/>. Sizes and the grace period are checked when the topology is built.
/// </summary>
public abstract record WindowDefinition
{
    private protected WindowDefinition()
    {
    }

    /// <summary>How long after a window's end (in watermark time) it still accepts events; zero by default.</summary>
    public TimeSpan Grace { get; init; }

    /// <summary>The problem with this definition, or null when it is valid.</summary>
    internal virtual string? Problem() => Grace < TimeSpan.Zero ? $"its grace period is negative ({Grace})" : null;
}

/// <summary>Fixed-size, non-overlapping windows aligned to the Unix epoch: each event falls in exactly one.</summary>
/// <param name="Size">The length of each window; must be positive.</param>
public sealed record TumblingWindows(TimeSpan Size) : WindowDefinition
{
    /// <summary>Tumbling windows of <paramref name="size"/>.</summary>
    public static TumblingWindows Of(TimeSpan size) => new(size);

    /// <summary>The same windows with a grace period.</summary>
    public TumblingWindows WithGrace(TimeSpan grace) => this with { Grace = grace };

    internal override string? Problem() => Size <= TimeSpan.Zero ? $"its window size is not positive ({Size})" : base.Problem();
}

/// <summary>Fixed-size windows that start every <see cref="Advance"/>, so an event falls in Size / Advance windows.</summary>
/// <param name="Size">The length of each window; must be positive.</param>
/// <param name="Advance">The distance between window starts; must be positive and at most <paramref name="Size"/>.</param>
public sealed record HoppingWindows(TimeSpan Size, TimeSpan Advance) : WindowDefinition
{
    /// <summary>Hopping windows of <paramref name="size"/> starting every <paramref name="advance"/>.</summary>
    public static HoppingWindows Of(TimeSpan size, TimeSpan advance) => new(size, advance);

    /// <summary>The same windows with a grace period.</summary>
    public HoppingWindows WithGrace(TimeSpan grace) => this with { Grace = grace };

    internal override string? Problem() =>
        Size <= TimeSpan.Zero ? $"its window size is not positive ({Size})"
        : Advance <= TimeSpan.Zero ? $"its advance is not positive ({Advance})"
        : Advance > Size ? $"its advance ({Advance}) is larger than its size ({Size}), which would leave gaps"
        : base.Problem();
}

/// <summary>
/// Per-key windows of activity: events at most <see cref="Gap"/> apart (inclusive) fall in one session, and a session
/// that an event bridges merges with its neighbour.
/// </summary>
/// <param name="Gap">The inactivity gap that ends a session; must be positive.</param>
public sealed record SessionWindows(TimeSpan Gap) : WindowDefinition
{
    /// <summary>Sessions ended by <paramref name="gap"/> of inactivity.</summary>
    public static SessionWindows WithGap(TimeSpan gap) => new(gap);

    /// <summary>The same sessions with a grace period.</summary>
    public SessionWindows WithGrace(TimeSpan grace) => this with { Grace = grace };

    internal override string? Problem() => Gap <= TimeSpan.Zero ? $"its session gap is not positive ({Gap})" : base.Problem();
}

/// <summary>
/// The window of a stream-stream join: two records with the same key join when their event times are at most
/// <see cref="Within"/> apart. Records are kept until the watermark passes their time + Within + <see cref="Grace"/>.
/// </summary>
/// <param name="Within">The largest distance in event time between joined records; must be positive.</param>
public sealed record JoinWindows(TimeSpan Within)
{
    /// <summary>How much later than the window (in watermark time) a record is still joined; zero by default.</summary>
    public TimeSpan Grace { get; init; }

    /// <summary>A join window of <paramref name="within"/> either way.</summary>
    public static JoinWindows Of(TimeSpan within) => new(within);

    /// <summary>The same window with a grace period.</summary>
    public JoinWindows WithGrace(TimeSpan grace) => this with { Grace = grace };

    internal string? Problem() =>
        Within <= TimeSpan.Zero ? $"its join window is not positive ({Within})"
        : Grace < TimeSpan.Zero ? $"its grace period is negative ({Grace})"
        : null;
}

/// <summary>One window: its start (inclusive) and end (exclusive; for a session, the time of its last event).</summary>
/// <param name="Start">The start of the window.</param>
/// <param name="End">The end of the window.</param>
public readonly record struct TimeWindow(DateTimeOffset Start, DateTimeOffset End);

/// <summary>The key of a windowed aggregate: the grouping key and the window.</summary>
/// <typeparam name="TKey">The grouping key.</typeparam>
/// <param name="Key">The grouping key.</param>
/// <param name="Window">The window.</param>
public readonly record struct Windowed<TKey>(TKey Key, TimeWindow Window) : IWindowedKey
{
    object? IWindowedKey.GroupKey => Key;
}

/// <summary>A windowed key as the partitioner sees it: it partitions by the grouping key, so every window of a key stays in one task.</summary>
internal interface IWindowedKey
{
    object? GroupKey { get; }
}
