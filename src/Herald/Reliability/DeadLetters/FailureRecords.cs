using Herald.Messages;

namespace Herald.Reliability.DeadLetters;

/// <summary>The one mapping of a failure to a dead letter, shared by the consuming pipeline, the senders and subscriptions.</summary>
internal static class FailureRecords
{
    /// <summary>
    /// The dead letter of <paramref name="envelope"/> at <paramref name="endpoint"/>, with <paramref name="exception"/> as its
    /// error (its message after <paramref name="reason"/> when one is given), last failed <paramref name="now"/>.
    /// </summary>
    public static DeadLetter Create(
        Guid id, Envelope envelope, string endpoint, DeadLetterCause cause, Exception exception, DateTimeOffset firstFailure, DateTimeOffset now, int attempts, string? reason = null) => new()
    {
        Id = id,
        Envelope = envelope,
        Endpoint = endpoint,
        Cause = cause,
        ErrorType = exception.GetType().FullName ?? exception.GetType().Name,
        ErrorMessage = reason is null ? exception.Message : $"{reason}: {exception.Message}",
        StackTrace = exception.StackTrace,
        Fingerprint = ExceptionFingerprint.Compute(exception),
        FirstFailureTime = firstFailure,
        LastFailureTime = now,
        AttemptCount = attempts,
    };
}
