namespace Herald;

/// <summary>Base class of the exceptions Herald throws for misuse and for failed guarantees.</summary>
public class HeraldException : Exception
{
    /// <summary>Creates the exception with a message that says what went wrong and what to do.</summary>
    public HeraldException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the exception that caused it.</summary>
    public HeraldException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
