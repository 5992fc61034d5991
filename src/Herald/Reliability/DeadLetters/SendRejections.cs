using Herald.Messages;

namespace Herald.Reliability.DeadLetters;

/// <summary>The dead letter of a message that could not be sent (the outbox relay, the stored-event publisher): one shape for both.</summary>
internal static class SendRejections
{
    /// <summary>
    /// A <see cref="DeadLetterCause.SendRejected"/> record for <paramref name="destination"/> (a topic when <paramref name="topic"/>),
    /// with the send's exception as the reason; a message not yet due at <paramref name="deliverAt"/> keeps that due time for its retry.
    /// </summary>
    public static DeadLetter Create(
        Envelope envelope, string destination, bool topic, Exception exception, DateTimeOffset now, int attempts, string? reason = null, DateTimeOffset? deliverAt = null) => new()
    {
        Id = Guid.CreateVersion7(now),
        Envelope = DeadLetterHeaders.WithTopic(DeadLetterHeaders.WithDeliverAt(envelope, deliverAt, now), topic ? destination : null),
        Endpoint = destination,
        Cause = DeadLetterCause.SendRejected,
        ErrorType = exception.GetType().FullName ?? exception.GetType().Name,
        ErrorMessage = reason is null ? exception.Message : $"{reason}: {exception.Message}",
        StackTrace = exception.StackTrace,
        Fingerprint = ExceptionFingerprint.Compute(exception),
        FirstFailureTime = now,
        LastFailureTime = now,
        AttemptCount = Math.Max(1, attempts),
    };
}
