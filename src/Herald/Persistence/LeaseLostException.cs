namespace Herald.Persistence;

/// <summary>
/// Thrown instead of committing an attempt whose lease was lost while its handlers ran (a pending inbox mark another
/// holder took or that vanished): its writes are rolled back rather than applied beside the new holder's, and the retry
/// policy runs it again, which then finds the message handled or takes the lease anew.
/// </summary>
public sealed class LeaseLostException : HeraldException
{
    /// <summary>Creates the exception naming what was lost.</summary>
    public LeaseLostException(string message)
        : base(message)
    {
    }
}
