namespace Herald.Sagas;

/// <summary>
/// A message a state machine cannot take: it has no correlation id (or one no saga store can keep), its instance does not exist and the machine
/// says to dead-letter such messages, or its instance's stored data cannot be read as the machine's data type. It is never retried; the message goes to the dead letters with this reason.
/// </summary>
public sealed class SagaMessageRejectedException : HeraldException
{
    /// <summary>Creates the exception with the reason.</summary>
    public SagaMessageRejectedException(string message)
        : base(message)
    {
    }

    internal SagaMessageRejectedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
