namespace Herald.Reliability.Retry;

/// <summary>The outcome of <see cref="RetryPolicy.Decide"/>: retry at once, redeliver after a delay, or dead-letter.</summary>
public readonly record struct RetryDecision
{
    private RetryDecision(RetryAction action, TimeSpan delay)
    {
        Action = action;
        Delay = delay;
    }

    /// <summary>Run the handlers again at once.</summary>
    public static RetryDecision RetryImmediately { get; } = new(RetryAction.RetryImmediately, TimeSpan.Zero);

    /// <summary>Stop retrying: the message goes to the dead letters.</summary>
    public static RetryDecision DeadLetter { get; } = new(RetryAction.DeadLetter, TimeSpan.Zero);

    /// <summary>What to do.</summary>
    public RetryAction Action { get; }

    /// <summary>How long the transport waits before the redelivery (zero unless <see cref="Action"/> is <see cref="RetryAction.Redeliver"/>).</summary>
    public TimeSpan Delay { get; }

    /// <summary>Redeliver through the transport after the delay.</summary>
    public static RetryDecision Redeliver(TimeSpan delay)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);
        return new RetryDecision(RetryAction.Redeliver, delay);
    }
}
