using Microsoft.Extensions.Logging;

namespace Herald.Nats;

/// <summary>The NATS transport's log messages, with stable event ids (8000-8999).</summary>
internal static partial class Log
{
    [LoggerMessage(8002, LogLevel.Warning, "The NATS server at {Endpoint} takes messages of at most {MaxPayload} bytes, headers included, less than MaxMessageBytes ({MaxMessageBytes}); larger sends will be refused by the server")]
    public static partial void MaxPayloadBelowLimit(ILogger logger, string endpoint, long maxPayload, int maxMessageBytes);

    [LoggerMessage(8003, LogLevel.Debug, "Message {MessageId} was already stored on '{Subject}' (Nats-Msg-Id within the duplicate window); not stored again")]
    public static partial void DuplicateSuppressed(ILogger logger, string? messageId, string subject);

    [LoggerMessage(8004, LogLevel.Warning, "Topic stream '{Stream}' (topic '{Topic}') does not keep its messages by limits (an earlier Herald made it with interest retention): a message published while a new binding's source is being set up, or while the server sets it up again after a restart, can be lost. Delete the stream while nothing is being published to it; Herald makes it again with the TopicStream limits")]
    public static partial void TopicStreamNotKept(ILogger logger, string stream, string topic);

    [LoggerMessage(8010, LogLevel.Information, "Consuming '{Queue}' from stream '{Stream}' on NATS (prefetch {Prefetch}, concurrency {Concurrency})")]
    public static partial void ConsumerStarted(ILogger logger, string queue, string stream, int prefetch, int concurrency);

    [LoggerMessage(8012, LogLevel.Warning, "Pulling from the consumer of '{Queue}' failed; pulling again in a second")]
    public static partial void PullFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(8013, LogLevel.Warning, "The durable consumer '{Consumer}' of stream '{Stream}' ('{Queue}') was gone, deleted behind Herald's back (alone, or with its stream and the messages it held); made again, pulling again")]
    public static partial void ConsumerRemade(ILogger logger, string consumer, string stream, string queue);

    [LoggerMessage(8014, LogLevel.Warning, "The durable consumer '{Consumer}' of stream '{Stream}' ('{Queue}') has MaxDeliver {OnTheServer} on the server, not the configured {Configured}: another process or an earlier deployment made it, and Herald does not change it. Its limit, not the option, decides which delivery is the last")]
    public static partial void DurableMaxDeliverDiffers(ILogger logger, string consumer, string stream, string queue, string onTheServer, string configured);

    [LoggerMessage(8015, LogLevel.Warning, "The stream '{Stream}' keeping the max-deliveries advisories of '{Queue}' was gone (deleted behind Herald's back); making it again. A message that ran out of deliveries while it was gone is not dead-lettered: its advisory was not kept")]
    public static partial void MaxDeliveriesStreamRemade(ILogger logger, string stream, string queue);

    [LoggerMessage(8016, LogLevel.Warning, "Making sure the stream keeping the max-deliveries advisories of '{Queue}' exists failed; tried again at the next lag refresh")]
    public static partial void MaxDeliveriesStreamCheckFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(8017, LogLevel.Error, "The durable consumer '{Consumer}' of stream '{Stream}' ('{Queue}') is gone and the server refused to make it again; its pull stopped, and the consumer no longer consumes")]
    public static partial void DurableNotRemade(ILogger logger, Exception exception, string consumer, string stream, string queue);

    [LoggerMessage(8019, LogLevel.Error, "The durable consumer '{Consumer}' of stream '{Stream}' ('{Queue}') refuses every pull (it was made again as a push consumer behind Herald's back); its pull stopped, and the consumer no longer consumes")]
    public static partial void DurableRefusesPulls(ILogger logger, Exception exception, string consumer, string stream, string queue);

    [LoggerMessage(8018, LogLevel.Warning, "The stream '{Stream}', declared in Streams, was gone (deleted behind Herald's back, with the messages it held); declared again from its options")]
    public static partial void DeclaredStreamRemade(ILogger logger, string stream);

    [LoggerMessage(8023, LogLevel.Warning, "Handing a message of '{Queue}' back (nak) failed; it returns after the ack wait")]
    public static partial void NakFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(8025, LogLevel.Warning, "Putting a message of '{Queue}' held on its last delivery back (in the queue's stream, a mapped queue's in its delay stream) at the stop failed; it is nakked instead, and the server dead-letters it (max deliveries) without a handler having finished with it")]
    public static partial void PutBackFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(8026, LogLevel.Warning, "Acking a message of '{Queue}' after its copy was put back (in the queue's stream, a mapped queue's in its delay stream) failed; the copy is handled, and the original reaches the dead letters through its max-deliveries advisory")]
    public static partial void PutBackAckFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(8024, LogLevel.Warning, "Telling NATS a message of '{Queue}' is in progress failed; it may be delivered again after the ack wait")]
    public static partial void KeepAliveFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(8030, LogLevel.Warning, "A max-deliveries advisory of '{Queue}' could not be read; it is dropped: {Reason}")]
    public static partial void MaxDeliveriesAdvisoryUnreadable(ILogger logger, string queue, string reason);

    [LoggerMessage(8031, LogLevel.Information, "Message {Sequence} of stream '{Stream}' reached the most deliveries of the consumer of '{Queue}' but is no longer in the stream; nothing to dead-letter")]
    public static partial void MaxDeliveredMessageGone(ILogger logger, ulong sequence, string stream, string queue);

    [LoggerMessage(8032, LogLevel.Warning, "Removing message {Sequence} of stream '{Stream}' after it was dead-lettered failed; it stays in the stream, never delivered again")]
    public static partial void MaxDeliveredRemoveFailed(ILogger logger, Exception exception, ulong sequence, string stream);

    [LoggerMessage(8033, LogLevel.Warning, "Publishing to '{Subject}' got no answer from JetStream ({Reason}); trying again in {Wait}")]
    public static partial void PublishRetried(ILogger logger, string subject, TimeSpan wait, string reason);

    [LoggerMessage(8035, LogLevel.Warning, "Pulling from the delay stream of '{Queue}' failed; pulling again in a second")]
    public static partial void DelayPullFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(8036, LogLevel.Warning, "Moving a due delayed message of '{Queue}' to the queue failed; it stays in the delay stream and is tried again in a second")]
    public static partial void DelayMoveFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(8037, LogLevel.Warning, "Handing an early message of '{Queue}' (sent with a delay by an earlier Herald, or published with a delay to a bound topic) to its delay stream failed; it is nakked until due instead, and that delivery counts as an attempt")]
    public static partial void DelayHandOverFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(8038, LogLevel.Information, "Message {MessageId} of '{Queue}' is not settled: the consumer's stop abandoned its handler, and the server delivers it again once its ack wait runs out")]
    public static partial void AbandonedNotSettled(ILogger logger, Guid messageId, string queue);
}
