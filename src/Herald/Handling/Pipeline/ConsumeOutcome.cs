using Herald.Reliability.DeadLetters;

namespace Herald.Handling.Pipeline;

/// <summary>What the chain decided for a delivery; the settle step carries it out on the delivery.</summary>
internal readonly record struct ConsumeOutcome(ConsumeVerdict Verdict, Exception? Failure, DeadLetterCause Cause, int Attempt, TimeSpan Delay, DateTimeOffset? FirstFailure)
{
    public static ConsumeOutcome Handled => new(ConsumeVerdict.Handled, null, default, 0, TimeSpan.Zero, null);

    public static ConsumeOutcome Duplicate => new(ConsumeVerdict.Duplicate, null, default, 0, TimeSpan.Zero, null);

    /// <summary>Deliver again after <paramref name="delay"/>, the first-failure time travelling with the message.</summary>
    public static ConsumeOutcome Redeliver(TimeSpan delay, DateTimeOffset firstFailure) =>
        new(ConsumeVerdict.Redeliver, null, default, 0, delay, firstFailure);

    /// <summary>Dead-letter with the reason; <paramref name="firstFailure"/> null when it is read from the message or is now.</summary>
    public static ConsumeOutcome DeadLetter(Exception failure, DeadLetterCause cause, int attempt, DateTimeOffset? firstFailure) =>
        new(ConsumeVerdict.DeadLetter, failure, cause, attempt, TimeSpan.Zero, firstFailure);
}

/// <summary>The kinds of <see cref="ConsumeOutcome"/>.</summary>
internal enum ConsumeVerdict
{
    /// <summary>The handlers ran and their unit of work committed: ack.</summary>
    Handled,

    /// <summary>The inbox found the message handled already: ack without running the handlers.</summary>
    Duplicate,

    /// <summary>The attempt failed and the retry policy asks for a later delivery: nack with a delay.</summary>
    Redeliver,

    /// <summary>Poison or out of attempts: to the dead letters with the reason, then ack.</summary>
    DeadLetter,
}
