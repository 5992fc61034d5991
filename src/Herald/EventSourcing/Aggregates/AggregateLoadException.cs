namespace Herald.EventSourcing.Aggregates;

/// <summary>
/// Thrown by a load when a stored event cannot be applied (its type is unknown, its body does not decode, or <c>When</c>
/// throws): it names the stream and version, which the cause alone does not, and keeps the cause as the inner exception.
/// A retry policy classifies it by its cause.
/// </summary>
internal sealed class AggregateLoadException(Type aggregate, RecordedEvent recorded, Exception cause)
    : HeraldException(
        $"Loading {aggregate.Name} failed at stream '{recorded.Stream}' version {recorded.Version} (event '{recorded.EventType}' {recorded.EventId}): {cause.GetType().Name}: {cause.Message}",
        cause);
