namespace Herald.Transport;

/// <summary>Thrown before sending when a message body is larger than the transport accepts.</summary>
/// <param name="messageType">The logical type of the refused message.</param>
/// <param name="bytes">Size of the refused body.</param>
/// <param name="limit">The transport's limit.</param>
public sealed class MessageTooLargeException(string messageType, int bytes, int limit)
    : HeraldException($"A '{messageType}' message of {bytes} bytes is larger than the transport's limit of {limit} bytes; it was not sent.")
{
    /// <summary>Size of the refused body.</summary>
    public int Bytes { get; } = bytes;

    /// <summary>The transport's limit.</summary>
    public int Limit { get; } = limit;
}
