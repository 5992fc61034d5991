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
}
