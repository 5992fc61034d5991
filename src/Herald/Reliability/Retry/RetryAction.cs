namespace Herald.Reliability.Retry;

/// <summary>What the consuming pipeline does after a failed attempt.</summary>
public enum RetryAction
{
    /// <summary>Run the handlers again at once, in process, within the same delivery.</summary>
    RetryImmediately,

    /// <summary>Hand the message back to the transport, to be delivered again after <see cref="RetryDecision.Delay"/>.</summary>
    Redeliver,

    /// <summary>Write the message to the dead letters; it is not retried again.</summary>
    DeadLetter,
}
