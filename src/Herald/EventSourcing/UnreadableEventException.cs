namespace Herald.EventSourcing;

/// <summary>
/// Thrown on read when a stored event's row cannot be turned back into an event (a column another tool changed): the store
/// answers, but this event reads the same way every time, so it is not retried like an outage.
/// </summary>
public sealed class UnreadableEventException : HeraldException
{
    /// <summary>Creates the exception naming the event's global position, with the cause inside.</summary>
    public UnreadableEventException(long position, Exception innerException)
        : base($"The stored event at position {position} cannot be read: {innerException?.Message}", innerException)
    {
        Position = position;
    }

    /// <summary>The event's position in the global log.</summary>
    public long Position { get; }
}
