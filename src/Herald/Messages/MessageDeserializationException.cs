namespace Herald.Messages;

/// <summary>Thrown when a body cannot be decoded into its message type. Such a message is never retried.</summary>
public sealed class MessageDeserializationException : HeraldException
{
    /// <summary>Creates the exception naming the message type and the decoding error.</summary>
    public MessageDeserializationException(string messageType, Exception? innerException)
        : base($"The body of a '{messageType}' message could not be decoded: {innerException?.Message}", innerException)
    {
        MessageType = messageType;
    }

    /// <summary>The logical message type whose body failed to decode.</summary>
    public string MessageType { get; }
}
