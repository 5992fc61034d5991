namespace Herald.Messages;

/// <summary>Turns message objects into envelope bodies and back.</summary>
public interface IMessageSerializer
{
    /// <summary>The media type written into <see cref="Envelope.ContentType"/>.</summary>
    string ContentType { get; }

    /// <summary>Serializes a message of the given type.</summary>
    byte[] Serialize(object message, Type type);

    /// <summary>Deserializes a body into the given type; throws <see cref="MessageDeserializationException"/> when it cannot.</summary>
    object Deserialize(ReadOnlyMemory<byte> body, Type type);

    /// <summary>
    /// True when it reads bodies of <paramref name="contentType"/>. Consumers hand it JSON and untyped bodies always, and any
    /// other content type only when this says so (else the message is dead-lettered); by default, its own <see cref="ContentType"/>.
    /// </summary>
    bool SupportsContentType(string contentType) => ContentTypes.IsSameMediaType(contentType, ContentType);
}
