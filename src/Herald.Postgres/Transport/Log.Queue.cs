using Microsoft.Extensions.Logging;

namespace Herald.Postgres;

/// <summary>The PostgreSQL queue's log messages (event ids 4200-4299).</summary>
internal static partial class Log
{
    [LoggerMessage(4200, LogLevel.Debug, "PostgreSQL queue consumer {Owner} of '{Queue}' in schema '{Schema}' started ({MaxConcurrency} at once, {Capacity} held at most)")]
    public static partial void QueueConsumerStarted(ILogger logger, Guid owner, string queue, string schema, int maxConcurrency, int capacity);

    [LoggerMessage(4201, LogLevel.Debug, "PostgreSQL queue consumer {Owner} of '{Queue}' stopped")]
    public static partial void QueueConsumerStopped(ILogger logger, Guid owner, string queue);

    [LoggerMessage(4210, LogLevel.Warning, "Claiming messages of '{Queue}' in schema '{Schema}' failed; trying again after the poll interval")]
    public static partial void QueueClaimFailed(ILogger logger, Exception exception, string queue, string schema);

    [LoggerMessage(4211, LogLevel.Warning, "Renewing the leases of consumer {Owner} of '{Queue}' failed; its messages may be delivered again elsewhere")]
    public static partial void QueueLeaseRenewalFailed(ILogger logger, Exception exception, Guid owner, string queue);

    [LoggerMessage(4212, LogLevel.Warning, "The {Settlement} of message {MessageId} from '{Queue}' found its lease lost (it ran out and another consumer took the message); it will be or was delivered again")]
    public static partial void QueueLeaseLost(ILogger logger, string settlement, Guid messageId, string queue);

    [LoggerMessage(4213, LogLevel.Error, "Settling message {MessageId} from '{Queue}' failed; it is delivered again when its lease runs out")]
    public static partial void QueueSettleFailed(ILogger logger, Exception exception, Guid messageId, string queue);

    [LoggerMessage(4214, LogLevel.Warning, "Handing back the messages of consumer {Owner} of '{Queue}' failed; they are delivered again when their lease runs out")]
    public static partial void QueueReleaseFailed(ILogger logger, Exception exception, Guid owner, string queue);

    [LoggerMessage(4220, LogLevel.Warning, "A grouped commit of {Count} queue sends failed ({SqlState}); sending them one by one")]
    public static partial void QueueSendGroupFailed(ILogger logger, Exception exception, int count, string sqlState);
}
