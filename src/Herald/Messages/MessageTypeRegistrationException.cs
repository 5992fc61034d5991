namespace Herald.Messages;

/// <summary>Thrown when a message type registration is invalid or clashes with an existing one.</summary>
public sealed class MessageTypeRegistrationException : HeraldException
{
    /// <summary>Creates the exception with a message naming the types involved.</summary>
    public MessageTypeRegistrationException(string message)
        : base(message)
    {
    }
}
