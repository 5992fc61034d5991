namespace Herald.Diagnostics;

/// <summary>Names of Herald's instruments and of the tags they carry.</summary>
public static class MetricNames
{
    /// <summary>Counter of messages sent or published.</summary>
    public const string MessagesPublished = "herald.messages.published";

    /// <summary>Counter of messages handled successfully.</summary>
    public const string MessagesProcessed = "herald.messages.processed";

    /// <summary>Counter of failed handling attempts.</summary>
    public const string MessagesFailed = "herald.messages.failed";

    /// <summary>Counter of messages moved to the dead letters.</summary>
    public const string MessagesDeadLettered = "herald.messages.dead_lettered";

    /// <summary>Histogram of processing time in seconds.</summary>
    public const string ProcessingDuration = "herald.message.processing.duration";

    /// <summary>Tag: the endpoint (consumer queue) that handled the message.</summary>
    public const string EndpointTag = "herald.endpoint";

    /// <summary>Tag: the logical message type.</summary>
    public const string MessageTypeTag = "herald.message_type";

    /// <summary>Tag: the queue or topic a message was sent to (OpenTelemetry messaging convention).</summary>
    public const string DestinationTag = "messaging.destination.name";
}
