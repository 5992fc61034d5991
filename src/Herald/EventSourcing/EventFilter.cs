namespace Herald.EventSourcing;

/// <summary>Selects events of the global log by stream category and/or event type.</summary>
public sealed record EventFilter
{
    /// <summary>Only streams of this category (the part of the stream name before the first '-').</summary>
    public string? Category { get; init; }

    /// <summary>Only these event types (logical names).</summary>
    public IReadOnlyCollection<string>? EventTypes { get; init; }

    /// <summary>A filter on one category.</summary>
    public static EventFilter ForCategory(string category) => new() { Category = category };

    /// <summary>A filter on event types.</summary>
    public static EventFilter ForEventTypes(params string[] eventTypes) => new() { EventTypes = eventTypes };
}
