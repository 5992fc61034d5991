using Herald.Messages;

namespace Herald.EventSourcing;

/// <summary>An event as stored: the whole envelope plus its place in its stream and in the global log.</summary>
/// <param name="Stream">The stream it belongs to (<c>category-id</c>).</param>
/// <param name="Version">Its version in the stream, from 1.</param>
/// <param name="Position">
/// Its position in the global log (<c>$all</c>), from 1. Strictly increasing in the order readers see events; not
/// necessarily contiguous, and a position lower than one already readable never appears later.
/// </param>
/// <param name="RecordedAt">When the store recorded it.</param>
/// <param name="Envelope">The event with its metadata (correlation, causation, user, headers, body).</param>
public sealed record RecordedEvent(string Stream, long Version, long Position, DateTimeOffset RecordedAt, Envelope Envelope)
{
    /// <summary>The logical event type.</summary>
    public string EventType => Envelope.MessageType;

    /// <summary>The event id (the envelope's message id).</summary>
    public Guid EventId => Envelope.MessageId;
}
