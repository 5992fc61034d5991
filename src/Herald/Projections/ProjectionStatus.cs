namespace Herald.Projections;

/// <summary>Where a projection stands, from <see cref="ProjectionManager.GetStatusAsync(CancellationToken)"/>.</summary>
public sealed record ProjectionStatus
{
    /// <summary>The projection's name.</summary>
    public required string Name { get; init; }

    /// <summary>Async or inline.</summary>
    public required ProjectionMode Mode { get; init; }

    /// <summary>True when this node runs it (it leads the projection); another node may run it otherwise.</summary>
    public bool IsRunningHere { get; init; }

    /// <summary>The generation of its read models that serves reads.</summary>
    public int Generation { get; init; } = 1;

    /// <summary>The last global position it applied (its checkpoint); null for an inline projection.</summary>
    public long? Position { get; init; }

    /// <summary>The head of the global log when the status was taken.</summary>
    public long HeadPosition { get; init; }

    /// <summary>How far it is behind the head (head minus position), in positions; 0 for an inline projection.</summary>
    public long Lag { get; init; }

    /// <summary>
    /// True when it is behind and has not moved for <see cref="ProjectionOptions.StallAfter"/>, or its runner here stopped on
    /// a failure (see <see cref="LastError"/>).
    /// </summary>
    public bool IsStalled { get; init; }

    /// <summary>The last failure of its runner on this node, if any.</summary>
    public string? LastError { get; init; }

    /// <summary>The position a rebuild running here has reached, or null when none runs.</summary>
    public long? RebuildPosition { get; init; }

    /// <summary>When the status was taken.</summary>
    public DateTimeOffset TakenAt { get; init; }
}
