namespace Herald.EventSourcing.Aggregates;

/// <summary>Metadata stamped on every event of one save: who and what caused it.</summary>
public sealed record EventMetadata
{
    /// <summary>No metadata.</summary>
    public static EventMetadata None { get; } = new();

    /// <summary>The business flow the events belong to.</summary>
    public string? CorrelationId { get; init; }

    /// <summary>The message (usually a command) that caused them.</summary>
    public string? CausationId { get; init; }

    /// <summary>The user on whose behalf they were raised.</summary>
    public string? UserId { get; init; }

    /// <summary>Extra headers (trace context among them).</summary>
    public IReadOnlyDictionary<string, string>? Headers { get; init; }
}
