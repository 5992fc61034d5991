namespace Herald.EventSourcing;

/// <summary>Thrown before anything is written when an event body is larger than the store accepts.</summary>
public sealed class EventTooLargeException : ArgumentException
{
    /// <summary>Creates the exception naming the event, its size and the limit.</summary>
    public EventTooLargeException(Guid eventId, string eventType, int bytes, int limit)
        : base($"The '{eventType}' event {eventId} has a body of {bytes} bytes, more than the store's limit of {limit} bytes. Nothing was written.", "events")
    {
        EventId = eventId;
        Bytes = bytes;
        Limit = limit;
    }

    /// <summary>The refused event.</summary>
    public Guid EventId { get; }

    /// <summary>Size of its body in bytes.</summary>
    public int Bytes { get; }

    /// <summary>The store's limit in bytes.</summary>
    public int Limit { get; }
}
