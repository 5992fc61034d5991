namespace Herald.EventSourcing;

/// <summary>Evaluates an <see cref="EventFilter"/> in memory, for stores and subscriptions that filter on the client side.</summary>
internal sealed class EventFilterMatcher
{
    private static readonly EventFilterMatcher MatchAll = new(null, null);

    private readonly string? _category;
    private readonly HashSet<string>? _eventTypes;

    private EventFilterMatcher(string? category, HashSet<string>? eventTypes)
    {
        _category = category;
        _eventTypes = eventTypes;
    }

    /// <summary>A matcher for the filter; a null filter matches every event.</summary>
    public static EventFilterMatcher Create(EventFilter? filter) =>
        filter is null || (filter.Category is null && filter.EventTypes is null)
            ? MatchAll
            : new EventFilterMatcher(filter.Category, filter.EventTypes is null ? null : new HashSet<string>(filter.EventTypes, StringComparer.Ordinal));

    /// <summary>True when the event's stream category and type pass the filter.</summary>
    public bool Matches(RecordedEvent recorded)
    {
        ArgumentNullException.ThrowIfNull(recorded);
        if (_category is not null && !IsInCategory(recorded.Stream, _category))
        {
            return false;
        }

        return _eventTypes is null || _eventTypes.Contains(recorded.EventType);
    }

    private static bool IsInCategory(string stream, string category) =>
        stream.StartsWith(category, StringComparison.Ordinal)
        && (stream.Length == category.Length || stream[category.Length] == StreamName.CategorySeparator);
}
