using Microsoft.Extensions.Logging;

namespace Herald.Hosting;

/// <summary>The leased-queue consumer's log messages (event ids 1200-1299), logged to the adapter's category.</summary>
internal static partial class Log
{
    [LoggerMessage(1200, LogLevel.Debug, "Consumer of {Consumer} started ({MaxConcurrency} at once, {Capacity} held at most)")]
    public static partial void LeasedQueueConsumerStarted(ILogger logger, string consumer, int maxConcurrency, int capacity);

    [LoggerMessage(1201, LogLevel.Debug, "Consumer of {Consumer} stopped")]
    public static partial void LeasedQueueConsumerStopped(ILogger logger, string consumer);

    [LoggerMessage(1210, LogLevel.Warning, "Claiming messages for the consumer of {Consumer} failed; trying again in {Delay}")]
    public static partial void LeasedQueueClaimFailed(ILogger logger, Exception exception, string consumer, TimeSpan delay);

    [LoggerMessage(1211, LogLevel.Warning, "Renewing the leases of the consumer of {Consumer} failed; its messages may be delivered again elsewhere")]
    public static partial void LeasedQueueRenewalFailed(ILogger logger, Exception exception, string consumer);

    [LoggerMessage(1212, LogLevel.Warning, "The {Settlement} of message {MessageId} by the consumer of {Consumer} found its lease lost (it ran out and another consumer may have taken the message); it will be or was delivered again")]
    public static partial void LeasedQueueLeaseLost(ILogger logger, string settlement, Guid messageId, string consumer);

    [LoggerMessage(1213, LogLevel.Error, "Settling message {MessageId} by the consumer of {Consumer} failed; it is delivered again when its lease runs out")]
    public static partial void LeasedQueueSettleFailed(ILogger logger, Exception exception, Guid messageId, string consumer);

    [LoggerMessage(1218, LogLevel.Warning, "The {Settlement} of message {MessageId} by the consumer of {Consumer} failed; trying again in {Delay} while its lease holds")]
    public static partial void LeasedQueueSettleRetrying(ILogger logger, Exception exception, string settlement, Guid messageId, string consumer, TimeSpan delay);

    [LoggerMessage(1214, LogLevel.Warning, "Handing back the messages of the consumer of {Consumer} failed; they are delivered again when their lease runs out")]
    public static partial void LeasedQueueReleaseFailed(ILogger logger, Exception exception, string consumer);

    [LoggerMessage(1215, LogLevel.Warning, "Message {MessageId} of the consumer of {Consumer} was not started: its lease may have run out while it waited (lease renewals are late); it is delivered again")]
    public static partial void LeasedQueueMessageNotStarted(ILogger logger, Guid messageId, string consumer);

    [LoggerMessage(1216, LogLevel.Warning, "Handing back message {MessageId} of the consumer of {Consumer}, which was not started, failed; it is delivered again when its lease runs out")]
    public static partial void LeasedQueueHandBackFailed(ILogger logger, Exception exception, Guid messageId, string consumer);

    [LoggerMessage(1217, LogLevel.Warning, "The lease of message {MessageId} held by the consumer of {Consumer} was lost (another consumer claimed it after it ran out): its handler is cancelled and its settlement will be refused")]
    public static partial void LeasedQueueClaimLost(ILogger logger, Guid messageId, string consumer);

    [LoggerMessage(1219, LogLevel.Warning, "The lease of message {MessageId} held by the consumer of {Consumer} ran out while its renewals failed (another consumer may claim it now): its handler is cancelled, and a settlement applies only if no other consumer took the message")]
    public static partial void LeasedQueueLeaseRanOut(ILogger logger, Guid messageId, string consumer);

    [LoggerMessage(1220, LogLevel.Information, "The {Settlement} of message {MessageId} is not sent: the stop of the consumer of {Consumer} abandoned its handler and handed the message back; it is delivered again")]
    public static partial void LeasedQueueAbandonedNotSettled(ILogger logger, string settlement, Guid messageId, string consumer);

    [LoggerMessage(1221, LogLevel.Information, "The stop of the consumer of {Consumer} waits for {Count} settlement(s) under way before handing back what it holds")]
    public static partial void LeasedQueueWaitingForSettlements(ILogger logger, int count, string consumer);
}
