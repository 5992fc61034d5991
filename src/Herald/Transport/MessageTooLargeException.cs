namespace Herald.Transport;

/// <summary>Thrown before sending when a message body is larger than the transport accepts.</summary>
public sealed class MessageTooLargeException : HeraldException
{
    /// <summary>Creates the exception naming the message type, its size and the limit.</summary>
    public MessageTooLargeException(string messageType, int bytes, int limit)
        : base($"A '{messageType}' message of {bytes} bytes is larger than the transport's limit of {limit} bytes; it was not sent.")
    {
        Bytes = bytes;
        Limit = limit;
    }

    /// <summary>Size of the refused body.</summary>
    public int Bytes { get; }

    /// <summary>The transport's limit.</summary>
    public int Limit { get; }
}
