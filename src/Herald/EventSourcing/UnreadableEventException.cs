using Herald.Messages;

namespace Herald.EventSourcing;

/// <summary>
/// Thrown on read when a stored event's row cannot be turned back into an event (a column another tool changed): the store
/// answers, but this event reads the same way every time, so it is not retried like an outage.
/// </summary>
public sealed class UnreadableEventException : HeraldException
{
    /// <summary>Creates the exception naming the event's global position, with the cause inside.</summary>
    public UnreadableEventException(long position, Exception innerException)
        : this(position, stream: null, salvaged: null, innerException)
    {
    }

    /// <summary>Creates the exception naming the event's position and stream, with what could still be read of its row.</summary>
    public UnreadableEventException(long position, string? stream, Envelope? salvaged, Exception innerException)
        : base(Describe(position, stream, innerException), innerException)
    {
        Position = position;
        Stream = stream;
        Salvaged = salvaged;
    }

    /// <summary>The event's position in the global log.</summary>
    public long Position { get; }

    /// <summary>The stream the event belongs to, when that column still reads.</summary>
    public string? Stream { get; }

    /// <summary>What could still be read of the event's row (its id, type, time and body bytes; a part that failed is empty), for its dead letter.</summary>
    public Envelope? Salvaged { get; }

    private static string Describe(long position, string? stream, Exception? innerException) => stream is null
        ? $"The stored event at position {position} cannot be read: {innerException?.Message}"
        : $"The stored event at position {position} (stream '{StreamName.Printable(stream)}') cannot be read: {innerException?.Message}";
}
