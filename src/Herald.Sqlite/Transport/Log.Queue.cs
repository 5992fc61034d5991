using Microsoft.Extensions.Logging;

namespace Herald.Sqlite;

/// <summary>The durable local queue's log messages (event ids 3200-3299).</summary>
internal static partial class Log
{
    [LoggerMessage(3200, LogLevel.Debug, "SQLite queue consumer {Owner} of '{Queue}' on '{DataSource}' started ({MaxConcurrency} at once, {Capacity} held at most)")]
    public static partial void QueueConsumerStarted(ILogger logger, string owner, string queue, string dataSource, int maxConcurrency, int capacity);

    [LoggerMessage(3201, LogLevel.Debug, "SQLite queue consumer {Owner} of '{Queue}' stopped")]
    public static partial void QueueConsumerStopped(ILogger logger, string owner, string queue);

    [LoggerMessage(3210, LogLevel.Warning, "Claiming messages of '{Queue}' on '{DataSource}' failed; trying again after the poll interval")]
    public static partial void QueueClaimFailed(ILogger logger, Exception exception, string queue, string dataSource);

    [LoggerMessage(3211, LogLevel.Warning, "Renewing the leases of consumer {Owner} of '{Queue}' failed; its messages may be delivered again elsewhere")]
    public static partial void QueueLeaseRenewalFailed(ILogger logger, Exception exception, string owner, string queue);

    [LoggerMessage(3212, LogLevel.Warning, "The {Settlement} of message {MessageId} from '{Queue}' found its lease lost (it ran out and another consumer took the message); it will be or was delivered again")]
    public static partial void QueueLeaseLost(ILogger logger, string settlement, Guid messageId, string queue);

    [LoggerMessage(3213, LogLevel.Error, "Settling message {MessageId} from '{Queue}' failed; it is delivered again when its lease runs out")]
    public static partial void QueueSettleFailed(ILogger logger, Exception exception, Guid messageId, string queue);

    [LoggerMessage(3214, LogLevel.Warning, "Handing back the messages of consumer {Owner} of '{Queue}' failed; they are delivered again when their lease runs out")]
    public static partial void QueueReleaseFailed(ILogger logger, Exception exception, string owner, string queue);

    [LoggerMessage(3215, LogLevel.Warning, "Message {MessageId} of '{Queue}' was not started: its lease may have run out while it waited (lease renewals are late); it is delivered again")]
    public static partial void QueueMessageNotStarted(ILogger logger, Guid messageId, string queue);

    [LoggerMessage(3216, LogLevel.Warning, "Handing back message {MessageId} of '{Queue}', which was not started, failed; it is delivered again when its lease runs out")]
    public static partial void QueueHandBackFailed(ILogger logger, Exception exception, Guid messageId, string queue);
}
