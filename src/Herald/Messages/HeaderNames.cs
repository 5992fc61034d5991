namespace Herald.Messages;

/// <summary>Names of the headers Herald itself reads and writes.</summary>
public static class HeaderNames
{
    /// <summary>W3C trace context parent (CloudEvents distributed tracing extension).</summary>
    public const string TraceParent = "traceparent";

    /// <summary>W3C trace context state.</summary>
    public const string TraceState = "tracestate";

    /// <summary>The CloudEvents <c>source</c> of a message: the endpoint or service that produced it.</summary>
    public const string Source = "herald-source";

    /// <summary>The id of the saga timeout a message is the delivery of; the saga ignores it unless it still holds that timeout.</summary>
    public const string SagaTimeoutId = "herald-saga-timeout-id";

    /// <summary>Why a message was dead-lettered.</summary>
    public const string DeadLetterReason = "herald-dead-letter-reason";

    /// <summary>When the message first failed to be handled (RFC 3339), carried on its redeliveries so its dead letter knows.</summary>
    public const string FirstFailure = "herald-first-failure";

    /// <summary>When a dead-lettered message that was not yet due is due (RFC 3339); a retry from the dead letters waits until then.</summary>
    public const string DeliverAt = "herald-deliver-at";

    /// <summary>The topic a dead-lettered message was to be published to (the outbox relay, the stored-event publisher); a retry from the dead letters publishes it there.</summary>
    public const string DeadLetterTopic = "herald-dead-letter-topic";

    /// <summary>
    /// The kind of consumer a dead letter came from (a <c>DeadLetterOrigin</c>, by name), for every kind but an endpoint's
    /// queue: a retry from the dead letters takes it back to that kind of consumer.
    /// </summary>
    public const string DeadLetterOrigin = "herald-dead-letter-origin";

    /// <summary>The id of the dead-letter record a message in a transport's own dead letters stands for, so draining it twice stores it once.</summary>
    public const string DeadLetterId = "herald-dead-letter-id";

    /// <summary>The <c>DeadLetterCause</c> of a message in a transport's own dead letters, by name.</summary>
    public const string DeadLetterCause = "herald-dead-letter-cause";

    /// <summary>The full name of the exception type that dead-lettered a message in a transport's own dead letters.</summary>
    public const string DeadLetterErrorType = "herald-dead-letter-error-type";

    /// <summary>The fingerprint of the failure that dead-lettered a message in a transport's own dead letters.</summary>
    public const string DeadLetterFingerprint = "herald-dead-letter-fingerprint";

    /// <summary>How many handling attempts were made before a message went to a transport's own dead letters.</summary>
    public const string DeadLetterAttempts = "herald-dead-letter-attempts";

    /// <summary>When a message went to a transport's own dead letters (RFC 3339).</summary>
    public const string DeadLetterTime = "herald-dead-letter-time";
}
