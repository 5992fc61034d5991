namespace Herald.Transport;

/// <summary>
/// Why a transport could not read a delivery into an envelope (missing or invalid attributes, a time out of range...):
/// carried as <see cref="Delivery.DecodeFailure"/>, so the pipeline dead-letters the delivery with this reason.
/// </summary>
public sealed class MalformedMessageException : HeraldException
{
    /// <summary>Creates the exception with a message that says what is wrong with the delivery.</summary>
    public MalformedMessageException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the exception decoding threw.</summary>
    public MalformedMessageException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
