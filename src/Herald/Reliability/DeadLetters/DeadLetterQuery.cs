namespace Herald.Reliability.DeadLetters;

/// <summary>
/// Which dead letters to list, count, retry or delete. Filters combine with AND; a null filter matches everything.
/// Results come in <see cref="DeadLetter.Id"/> order; <see cref="After"/> and <see cref="Limit"/> page through them.
/// </summary>
public sealed record DeadLetterQuery
{
    /// <summary>Largest page.</summary>
    public const int MaxLimit = 1000;

    /// <summary>Every dead letter, in pages of 100.</summary>
    public static DeadLetterQuery All { get; } = new();

    /// <summary>Only this endpoint's (exact, case-sensitive).</summary>
    public string? Endpoint { get; init; }

    /// <summary>Only messages of this logical type (exact, case-sensitive).</summary>
    public string? MessageType { get; init; }

    /// <summary>Only failures with this fingerprint.</summary>
    public string? Fingerprint { get; init; }

    /// <summary>Only those whose <see cref="DeadLetter.LastFailureTime"/> is at or after this time.</summary>
    public DateTimeOffset? FailedFrom { get; init; }

    /// <summary>Only those whose <see cref="DeadLetter.LastFailureTime"/> is before this time.</summary>
    public DateTimeOffset? FailedBefore { get; init; }

    /// <summary>Continuation: only ids greater than this one (the last id of the previous page).</summary>
    public Guid? After { get; init; }

    /// <summary>Most records returned (or deleted) at once, 1 to <see cref="MaxLimit"/>; default 100. Counting ignores it.</summary>
    public int Limit
    {
        get;
        init
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, MaxLimit);
            field = value;
        }
    } = 100;

    /// <summary>True when the dead letter passes the filters (<see cref="After"/> included; <see cref="Limit"/> aside).</summary>
    public bool Matches(DeadLetter deadLetter)
    {
        ArgumentNullException.ThrowIfNull(deadLetter);
        return (Endpoint is null || string.Equals(deadLetter.Endpoint, Endpoint, StringComparison.Ordinal))
            && (MessageType is null || string.Equals(deadLetter.MessageType, MessageType, StringComparison.Ordinal))
            && (Fingerprint is null || string.Equals(deadLetter.Fingerprint, Fingerprint, StringComparison.Ordinal))
            && (FailedFrom is not { } from || deadLetter.LastFailureTime >= from)
            && (FailedBefore is not { } before || deadLetter.LastFailureTime < before)
            && (After is not { } after || deadLetter.Id.CompareTo(after) > 0);
    }
}
