using Herald.EventSourcing;

namespace Herald.Streams;

/// <summary>How a <see cref="StreamProcessor"/> reads its source, tracks event time and commits.</summary>
public sealed record StreamProcessorOptions
{
    /// <summary>The defaults: all of <c>$all</c>, no out-of-orderness, a commit every 100 events.</summary>
    public static StreamProcessorOptions Default { get; } = new();

    /// <summary>
    /// Where events come from: <see cref="StreamSource.All"/> (the default), a category of the event store, or
    /// <see cref="StreamSource.External"/> (a transport handler calls <see cref="StreamProcessor.ProcessAsync"/>).
    /// </summary>
    public StreamSource Source { get; init; } = StreamSource.All;

    /// <summary>How far behind the largest event time seen an event may still come in order: watermark = max − this.</summary>
    public TimeSpan AllowedOutOfOrderness { get; init; }

    /// <summary>Commit state, outputs and checkpoint together after this many events while catching up (and whenever caught up).</summary>
    public int CommitEvery { get; init; } = 100;

    /// <summary>How many events one read of the event store fetches.</summary>
    public int BatchSize { get; init; } = 500;

    /// <summary>
    /// How many tasks run the stream, each owning the keys whose stable hash maps to it (1 by default). Processes sharing
    /// the event store split the partitions through leader election. Changing it re-partitions the keys: give the stream
    /// a new name (new checkpoints and state) when you do.
    /// </summary>
    public int Partitions { get; init; } = 1;

    /// <summary>How often a processor checks its share of the partitions: takes free ones, gives extras back when another process joined.</summary>
    public TimeSpan PartitionBalanceInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Called with records that came after their window closed, when their operator has no side output.</summary>
    public Action<LateRecord>? OnLate { get; init; }
}

/// <summary>Where a stream processor's events come from.</summary>
public sealed record StreamSource
{
    private StreamSource(EventFilter? filter, bool external, bool transport = false)
    {
        Filter = filter;
        IsExternal = external;
        IsTransport = transport;
    }

    /// <summary>The whole global log of the event store.</summary>
    public static StreamSource All { get; } = new(null, false);

    /// <summary>Events fed by the application (a transport handler) through <see cref="StreamProcessor.ProcessAsync"/>.</summary>
    public static StreamSource External { get; } = new(null, true);

    /// <summary>
    /// The messages of the topology's source types that reach this host's endpoint through its transport (published to
    /// their topics, or sent to the endpoint's queue), handled through the endpoint's consuming chain: decode, inbox,
    /// retries and dead letters apply, and the state commits in the handler's unit of work. Keyed by the envelope's
    /// partition key (else its message id); event time is the envelope's time unless the source picks it.
    /// </summary>
    public static StreamSource Transport { get; } = new(null, true, true);

    /// <summary>True when the host's endpoint feeds the processor (<see cref="Transport"/>).</summary>
    public bool IsTransport { get; }

    /// <summary>The category filter on the event store, or null for all of it.</summary>
    public EventFilter? Filter { get; }

    /// <summary>True when no event store subscription feeds the processor.</summary>
    public bool IsExternal { get; }

    /// <summary>The events of one category of the event store (streams named <c>category-id</c>).</summary>
    public static StreamSource Category(string category)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(category);
        return new(EventFilter.ForCategory(category), false);
    }
}
