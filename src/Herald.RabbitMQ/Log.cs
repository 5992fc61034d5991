using Microsoft.Extensions.Logging;

namespace Herald.RabbitMQ;

/// <summary>The RabbitMQ transport's log messages, with stable event ids (5000-5999).</summary>
internal static partial class Log
{
    [LoggerMessage(5001, LogLevel.Information, "Connected to RabbitMQ at {Endpoint} as '{ConnectionName}'")]
    public static partial void Connected(ILogger logger, string endpoint, string connectionName);

    [LoggerMessage(5002, LogLevel.Warning, "RabbitMQ connection '{ConnectionName}' lost ({ReplyCode} {ReplyText}); recovering")]
    public static partial void ConnectionLost(ILogger logger, string connectionName, ushort replyCode, string replyText);

    [LoggerMessage(5003, LogLevel.Information, "RabbitMQ connection '{ConnectionName}' recovered")]
    public static partial void ConnectionRecovered(ILogger logger, string connectionName);

    [LoggerMessage(5004, LogLevel.Warning, "RabbitMQ connection '{ConnectionName}' failed to recover; retrying")]
    public static partial void ConnectionRecoveryFailed(ILogger logger, Exception exception, string connectionName);

    [LoggerMessage(5005, LogLevel.Warning, "RabbitMQ channel of '{ConnectionName}' closed ({ReplyCode} {ReplyText}); it is replaced on next use")]
    public static partial void ChannelClosed(ILogger logger, string connectionName, ushort replyCode, string replyText);

    [LoggerMessage(5010, LogLevel.Information, "Consuming '{Queue}' on RabbitMQ (prefetch {Prefetch}, concurrency {Concurrency})")]
    public static partial void ConsumerStarted(ILogger logger, string queue, int prefetch, int concurrency);

    [LoggerMessage(5012, LogLevel.Warning, "RabbitMQ cancelled the consumer of '{Queue}' (was the queue deleted?); declaring it again and consuming again")]
    public static partial void ConsumerCancelledByBroker(ILogger logger, string queue);

    [LoggerMessage(5013, LogLevel.Information, "Consuming '{Queue}' on RabbitMQ again, after the broker cancelled its consumer or closed its channel")]
    public static partial void ConsumerResumed(ILogger logger, string queue);

    [LoggerMessage(5014, LogLevel.Warning, "Consuming '{Queue}' again after the broker cancelled its consumer or closed its channel failed; trying again in {Interval}")]
    public static partial void ConsumerResumeFailed(ILogger logger, Exception exception, string queue, TimeSpan interval);

    [LoggerMessage(5015, LogLevel.Warning, "The broker closed the channel consuming '{Queue}' ({ReplyCode} {ReplyText}); consuming again on a new channel")]
    public static partial void ConsumerChannelClosedByBroker(ILogger logger, string queue, ushort replyCode, string replyText);

    [LoggerMessage(5016, LogLevel.Warning, "The broker's consumer_timeout cut off the handler of message {MessageId} on '{Queue}' ({CutOffs} time(s)); it is redelivered, and dead-lettered instead of run again after {MaxCutOffs}. Raise consumer_timeout for this queue above the handler's longest run")]
    public static partial void ConsumerTimeoutCutOff(ILogger logger, Guid messageId, string queue, int cutOffs, int maxCutOffs);

    [LoggerMessage(5017, LogLevel.Error, "Message {MessageId} on '{Queue}' was cut off by the broker's consumer_timeout {CutOffs} times; it is dead-lettered instead of run again")]
    public static partial void ConsumerTimeoutDeadLettered(ILogger logger, Guid messageId, string queue, int cutOffs);

    [LoggerMessage(5018, LogLevel.Error, "Message {MessageId} on '{Queue}' was delivered {Deliveries} times without being settled (MaxDeliveries {MaxDeliveries}); it is dead-lettered instead of run again. Its handler outlived consumer_timeout, or the process stopped or crashed while handling it")]
    public static partial void DeliveryLimitDeadLettered(ILogger logger, Guid messageId, string queue, int deliveries, int maxDeliveries);

    [LoggerMessage(5023, LogLevel.Information, "Delivery of message {MessageId} from '{Queue}' was made on a channel since lost; it is not settled, and the broker redelivers it, so it may be handled again")]
    public static partial void StaleDeliveryNotSettled(ILogger logger, Guid messageId, string queue);

    [LoggerMessage(5024, LogLevel.Warning, "Stopping the consumer of '{Queue}' did not complete cleanly")]
    public static partial void ConsumerStopFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(5025, LogLevel.Warning, "Sending the batched acks of '{Queue}' failed; those deliveries return to the queue")]
    public static partial void AckFlushFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(5030, LogLevel.Warning, "RabbitMQ returned an unconfirmed message published to exchange '{Exchange}' with routing key '{RoutingKey}': {ReplyCode} {ReplyText}")]
    public static partial void MessageReturned(ILogger logger, string exchange, string routingKey, ushort replyCode, string replyText);

    [LoggerMessage(5040, LogLevel.Warning, "The RabbitMQ management API at {Endpoint} could not be read (for queue '{Queue}'); the queue gauges fall back to a passive declare, which gives the ready count only and no unacked count (logged once)")]
    public static partial void ManagementApiUnavailable(ILogger logger, Exception exception, string endpoint, string queue);

    [LoggerMessage(5041, LogLevel.Error, "Resuming the consumer of '{Queue}' failed unexpectedly; the consumer stopped")]
    public static partial void ConsumerResumeAbandoned(ILogger logger, Exception exception, string queue);
}
