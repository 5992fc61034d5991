namespace Herald.Testing;

/// <summary>
/// Thrown by the harness's expectations when what a test expects did not happen by its deadline (or happened when it must
/// not); the message says what was expected and lists what was observed instead.
/// </summary>
public sealed class HarnessAssertionException : HeraldException
{
    /// <summary>Creates the exception with a message that says what was expected and what was observed.</summary>
    public HarnessAssertionException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the exception that caused it.</summary>
    public HarnessAssertionException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
