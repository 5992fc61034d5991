namespace Herald.Streams;

/// <summary>An input record that cannot be keyed (its key selector returned null); the processor dead-letters its event.</summary>
public sealed class StreamKeyException : HeraldException
{
    /// <summary>Creates the exception with the reason.</summary>
    public StreamKeyException(string message)
        : base(message)
    {
    }
}
