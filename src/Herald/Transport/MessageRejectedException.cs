namespace Herald.Transport;

/// <summary>
/// Thrown when a transport will never accept a send as asked (a name too long, a delay past its limit, a conflicting
/// queue or exchange): retrying cannot help, so the outbox dead-letters the message as rejected instead.
/// </summary>
public sealed class MessageRejectedException : HeraldException
{
    /// <summary>Creates the exception with a message that says what the transport refuses and why.</summary>
    public MessageRejectedException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the transport's own error.</summary>
    public MessageRejectedException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
