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

    // The stream's category (up to its first separator) equals the filter's, as the SQL stores compare their stored column:
    // a category holding the separator matches no stream.
    private static bool IsInCategory(string stream, string category)
    {
        var separator = stream.IndexOf(StreamName.CategorySeparator, StringComparison.Ordinal);
        return stream.AsSpan(0, separator < 0 ? stream.Length : separator).SequenceEqual(category);
    }
}
