namespace Herald.Messages;

/// <summary>Thrown when a logical message type name has no registered CLR type (for example a message arriving from another service).</summary>
public sealed class UnknownMessageTypeException : HeraldException
{
    /// <summary>Creates the exception for the unknown logical name.</summary>
    public UnknownMessageTypeException(string messageType)
        : base($"No type is registered for the message type name '{messageType}'. Register the class that carries it " +
               $"with [MessageType(\"{messageType}\")] and h.AddMessageType<T>(), or map it with h.AddMessageType<T>(\"{messageType}\").")
    {
        MessageType = messageType;
    }

    /// <summary>The logical name nobody registered.</summary>
    public string MessageType { get; }
}
