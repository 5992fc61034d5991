namespace Herald.EventSourcing;

/// <summary>Thrown before anything is written when an event body is larger than the store accepts.</summary>
/// <param name="eventId">The refused event.</param>
/// <param name="eventType">Its logical type.</param>
/// <param name="bytes">Size of its body in bytes.</param>
/// <param name="limit">The store's limit in bytes.</param>
public sealed class EventTooLargeException(Guid eventId, string eventType, int bytes, int limit)
    : ArgumentException($"The '{eventType}' event {eventId} has a body of {bytes} bytes, more than the store's limit of {limit} bytes. Nothing was written.", "events")
{
    /// <summary>The refused event.</summary>
    public Guid EventId { get; } = eventId;

    /// <summary>Size of its body in bytes.</summary>
    public int Bytes { get; } = bytes;

    /// <summary>The store's limit in bytes.</summary>
    public int Limit { get; } = limit;
}
