namespace Herald.Diagnostics;

/// <summary>Names of Herald's instruments and of the tags they carry.</summary>
public static class MetricNames
{
    /// <summary>
    /// Counter of messages a transport took (tags <see cref="MessageTypeTag"/>, <see cref="DestinationTag"/>), each once per
    /// send: sent or published at once, by the outbox relay, by the stored-event publisher, or retried from the dead letters.
    /// </summary>
    public const string MessagesPublished = "herald.messages.published";

    /// <summary>Counter of messages handled successfully, each once: a redelivery the inbox acks as a duplicate counts on <see cref="MessagesDuplicate"/> only.</summary>
    public const string MessagesProcessed = "herald.messages.processed";

    /// <summary>Counter of failed handling attempts.</summary>
    public const string MessagesFailed = "herald.messages.failed";

    /// <summary>Counter of messages moved to the dead letters, each once: a redelivery whose dead letter the store held already is not counted.</summary>
    public const string MessagesDeadLettered = "herald.messages.dead_lettered";

    /// <summary>Counter of failed attempts that are retried (tag <see cref="RetryKindTag"/>: immediate, delayed, or conflict for a version conflict run again outside the retry budget).</summary>
    public const string MessagesRetried = "herald.messages.retried";

    /// <summary>Counter of duplicate deliveries the inbox acked without running handlers.</summary>
    public const string MessagesDuplicate = "herald.messages.duplicates";

    /// <summary>Observable gauge of the dead letters held per endpoint.</summary>
    public const string DeadLetters = "herald.dead_letters";

    /// <summary>Counter of dead-letter alerts raised (an endpoint reaching its threshold).</summary>
    public const string DeadLetterAlerts = "herald.dead_letters.alerts";

    /// <summary>Counter of messages the outbox relay sent.</summary>
    public const string OutboxSent = "herald.outbox.sent";

    /// <summary>Counter of outbox sends that failed (and are retried).</summary>
    public const string OutboxSendFailures = "herald.outbox.send_failures";

    /// <summary>Observable gauge of the messages waiting in the outbox, as last counted by the relay.</summary>
    public const string OutboxPending = "herald.outbox.pending";

    /// <summary>
    /// Counter of leases lost while their work ran (tag <see cref="LeaseKindTag"/>): a queue lease, an idempotency lock, a
    /// pending inbox mark or a running saga instance another holder took; the work is cancelled and its completion refused.
    /// </summary>
    public const string LeasesLost = "herald.leases.lost";

    /// <summary>Histogram of processing time in seconds.</summary>
    public const string ProcessingDuration = "herald.message.processing.duration";

    /// <summary>Gauge of how far each async projection is behind the head of the global log, in positions (tag <see cref="ProjectionTag"/>).</summary>
    public const string ProjectionLag = "herald.projection.lag";

    /// <summary>Tag: the projection, on <see cref="ProjectionLag"/>.</summary>
    public const string ProjectionTag = "herald.projection";

    /// <summary>Gauge of a consumed SQL queue's messages by state (tags <see cref="EndpointTag"/> and <see cref="QueueStateTag"/>).</summary>
    public const string QueueMessages = "herald.queue.messages";

    /// <summary>Tag: ready, leased or delayed, on <see cref="QueueMessages"/>.</summary>
    public const string QueueStateTag = "herald.queue.state";

    /// <summary>Tag: the endpoint (consumer queue) that handled the message.</summary>
    public const string EndpointTag = "herald.endpoint";

    /// <summary>Tag: the logical message type.</summary>
    public const string MessageTypeTag = "herald.message_type";

    /// <summary>Tag: immediate, delayed or conflict, on <see cref="MessagesRetried"/>.</summary>
    public const string RetryKindTag = "herald.retry.kind";

    /// <summary>Tag: what kind of lease was lost, on <see cref="LeasesLost"/>: queue, idempotency_lock, inbox_mark or saga_instance.</summary>
    public const string LeaseKindTag = "herald.lease.kind";

    /// <summary>Tag: the queue or topic a message was sent to (OpenTelemetry messaging convention).</summary>
    public const string DestinationTag = "messaging.destination.name";
}
