using Herald.Messages;

namespace Herald.Reliability.DeadLetters;

/// <summary>
/// A message that will not be retried by itself: the envelope exactly as it was delivered, where and why it failed,
/// and how often. Operators list, inspect, retry and purge them through the <see cref="DeadLetterManager"/>.
/// </summary>
public sealed record DeadLetter
{
    /// <summary>Id of this record (a Guid v7, so records sort by the time they were written).</summary>
    public required Guid Id { get; init; }

    /// <summary>The message, unchanged (its <see cref="Envelope.DeliveryAttempt"/> is the delivery that failed last).</summary>
    public required Envelope Envelope { get; init; }

    /// <summary>
    /// The endpoint (queue) that failed to handle it, or the destination a send was rejected by; a retry sends it back there
    /// (publishes it, when its <see cref="HeaderNames.DeadLetterTopic"/> header names a topic). For a dead letter of another
    /// <see cref="Origin"/>, the name of that consumer (a projection's, a subscription's, <c>stream:</c> and a stream processor's).
    /// </summary>
    public required string Endpoint { get; init; }

    /// <summary>Why it was dead-lettered.</summary>
    public required DeadLetterCause Cause { get; init; }

    /// <summary>Full name of the exception type of the last failure.</summary>
    public required string ErrorType { get; init; }

    /// <summary>Message of the last failure.</summary>
    public required string ErrorMessage { get; init; }

    /// <summary>Stack trace of the last failure, if it had one.</summary>
    public string? StackTrace { get; init; }

    /// <summary>Stable hash of the exception type and the methods of the top stack frames; groups failures with one cause (see <see cref="ExceptionFingerprint"/>).</summary>
    public required string Fingerprint { get; init; }

    /// <summary>When the first attempt failed (as far as this node saw it; the last failure otherwise).</summary>
    public required DateTimeOffset FirstFailureTime { get; init; }

    /// <summary>When the last attempt failed, which is when the message was dead-lettered.</summary>
    public required DateTimeOffset LastFailureTime { get; init; }

    /// <summary>How many handling attempts were made, as counted by the retry policy (1 for input rejected at once).</summary>
    public int AttemptCount { get; init; }

    /// <summary>How many times an operator's retry failed to send it back (a successful retry deletes the record).</summary>
    public int RetryCount { get; init; }

    /// <summary>The error of the last failed retry, if any.</summary>
    public string? LastRetryError { get; init; }

    /// <summary>When the last failed retry happened, if any.</summary>
    public DateTimeOffset? LastRetryTime { get; init; }

    /// <summary>
    /// The kind of consumer <see cref="Endpoint"/> is (from the envelope's <see cref="HeaderNames.DeadLetterOrigin"/> header;
    /// <see cref="DeadLetterOrigin.Endpoint"/> when it has none), which decides what a retry does with it.
    /// </summary>
    public DeadLetterOrigin Origin => DeadLetterHeaders.TryGetOrigin(Envelope, out var origin) ? origin : DeadLetterOrigin.Endpoint;

    /// <summary>The logical message type (from the envelope).</summary>
    public string MessageType => Envelope.MessageType;
}
