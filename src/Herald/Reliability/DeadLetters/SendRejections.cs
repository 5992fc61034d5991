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
        Envelope envelope, string destination, bool topic, Exception exception, DateTimeOffset now, int attempts, string? reason = null, DateTimeOffset? deliverAt = null) =>
        FailureRecords.Create(
            Guid.CreateVersion7(now),
            DeadLetterHeaders.WithTopic(DeadLetterHeaders.WithDeliverAt(envelope, deliverAt, now), topic ? destination : null),
            destination,
            DeadLetterCause.SendRejected,
            exception,
            now,
            now,
            Math.Max(1, attempts),
            reason);
}
