using Microsoft.Extensions.Logging;

namespace Herald.Hosting;

/// <summary>Herald core's log messages, with stable event ids (1000-1999).</summary>
internal static partial class Log
{
    [LoggerMessage(1001, LogLevel.Information, "Endpoint '{Endpoint}' consuming on {Transport} ({Topics} topics, concurrency {Concurrency})")]
    public static partial void ConsumerStarted(ILogger logger, string endpoint, string transport, int topics, int concurrency);

    [LoggerMessage(1002, LogLevel.Information, "Endpoint '{Endpoint}' stopped")]
    public static partial void ConsumerStopped(ILogger logger, string endpoint);

    [LoggerMessage(1003, LogLevel.Critical, "The consumer of endpoint '{Endpoint}' stopped without being asked to; the endpoint no longer consumes and the health check reports it Unhealthy")]
    public static partial void ConsumerFaulted(ILogger logger, Exception exception, string endpoint);

    [LoggerMessage(1004, LogLevel.Error, "The consumer of endpoint '{Endpoint}' failed while the host stopped it; what it had not settled is delivered again")]
    public static partial void ConsumerFailedWhileStopping(ILogger logger, Exception exception, string endpoint);

    [LoggerMessage(1005, LogLevel.Information, "Endpoint '{Endpoint}' starts no consumer ({Reason}); messages sent to its queue wait there for a host that consumes it")]
    public static partial void NoConsumer(ILogger logger, string endpoint, string reason);

    [LoggerMessage(1010, LogLevel.Warning, "Message {MessageId} ({MessageType}) failed on attempt {Attempt} at '{Endpoint}'; redelivery in {Delay}")]
    public static partial void HandlerFailedWillRetry(ILogger logger, Exception exception, Guid messageId, string messageType, int attempt, string endpoint, TimeSpan delay);

    [LoggerMessage(1011, LogLevel.Error, "Message {MessageId} ({MessageType}) dead-lettered at '{Endpoint}' after {Attempt} attempt(s): {Reason}")]
    public static partial void DeadLettered(ILogger logger, Exception? exception, Guid messageId, string messageType, int attempt, string endpoint, string reason);

    [LoggerMessage(1020, LogLevel.Information, "Leading '{Resource}'")]
    public static partial void Leading(ILogger logger, string resource);

    [LoggerMessage(1021, LogLevel.Warning, "Lost the leadership of '{Resource}'; its work stopped, and this node tries to lead again every {Interval}")]
    public static partial void LeadershipLost(ILogger logger, string resource, TimeSpan interval);

    [LoggerMessage(1022, LogLevel.Warning, "Could not try to lead '{Resource}'; trying again in {Interval}")]
    public static partial void ElectionFailed(ILogger logger, Exception exception, string resource, TimeSpan interval);

    [LoggerMessage(1023, LogLevel.Error, "The work of '{Resource}' failed; this node lets go of its leadership and tries to lead again in {Interval}")]
    public static partial void LeadingWorkFailed(ILogger logger, Exception exception, string resource, TimeSpan interval);

    [LoggerMessage(1024, LogLevel.Information, "The work of '{Resource}' ended with an error as the host stopped; it stops as it would have")]
    public static partial void LeadingWorkFailedAtStop(ILogger logger, Exception exception, string resource);

    [LoggerMessage(1040, LogLevel.Error, "Settling message {MessageId} from {Queue} after its handler failed did not succeed; the transport delivers it again")]
    public static partial void SettleFailed(ILogger logger, Exception exception, Guid messageId, string queue);

    [LoggerMessage(1041, LogLevel.Error, "An observer of the broker partitions of {Queue} failed on a rebalance")]
    public static partial void PartitionObserverFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(1042, LogLevel.Warning, "Message {MessageId} from {Queue} failed after its settlement had started; the settlement stands, and the transport delivers it again if it did not complete")]
    public static partial void SettledThenFailed(ILogger logger, Exception exception, Guid messageId, string queue);

    [LoggerMessage(1030, LogLevel.Warning, "Rolling back a unit of work failed; its transaction is discarded with its scope")]
    public static partial void UnitOfWorkRollbackFailed(ILogger logger, Exception exception);
}
