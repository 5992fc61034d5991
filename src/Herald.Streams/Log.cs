using Microsoft.Extensions.Logging;

namespace Herald.Streams;

/// <summary>The log events of Herald.Streams (ids 11000–11999).</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 11000, Level = LogLevel.Information, Message = "Stream processor '{Processor}' started at position {Position} with {Entries} state entries")]
    public static partial void ProcessorStarted(ILogger logger, string processor, long position, int entries);

    [LoggerMessage(EventId = 11001, Level = LogLevel.Warning, Message = "Stream processor '{Processor}' dead-lettered the event at position {Position} ({EventType}): {Reason}")]
    public static partial void EventDeadLettered(ILogger logger, Exception exception, string processor, long position, string eventType, string reason);

    [LoggerMessage(EventId = 11002, Level = LogLevel.Warning, Message = "Stream processor '{Processor}': a late record reached '{Operator}' (event time {EventTime:o}, watermark {Watermark:o}) and went to the late handler")]
    public static partial void LateRecord(ILogger logger, string processor, string @operator, DateTimeOffset eventTime, DateTimeOffset watermark);

    [LoggerMessage(EventId = 11003, Level = LogLevel.Error, Message = "Stream processor '{Processor}' failed; it restarts from its last commit in {Delay}")]
    public static partial void ProcessorFailed(ILogger logger, Exception exception, string processor, TimeSpan delay);

    [LoggerMessage(EventId = 11004, Level = LogLevel.Information, Message = "Stream processor '{Processor}' stopped at position {Position}")]
    public static partial void ProcessorStopped(ILogger logger, string processor, long position);

    [LoggerMessage(EventId = 11005, Level = LogLevel.Information, Message = "Stream processor '{Processor}' runs partitions [{Partitions}] of {Count}")]
    public static partial void PartitionsOwned(ILogger logger, string processor, string partitions, int count);

    [LoggerMessage(EventId = 11006, Level = LogLevel.Warning, Message = "Stream processor '{Processor}' could not check its share of the partitions; it tries again in {Delay}")]
    public static partial void BalanceFailed(ILogger logger, Exception exception, string processor, TimeSpan delay);

    [LoggerMessage(EventId = 11007, Level = LogLevel.Information, Message = "Stream processor '{Processor}' holds broker partition {Partition}; loaded {Entries} state entries")]
    public static partial void BrokerPartitionLoaded(ILogger logger, string processor, int partition, int entries);

    [LoggerMessage(EventId = 11008, Level = LogLevel.Information, Message = "Stream processor '{Processor}' gave broker partition {Partition} up; its state leaves the memory")]
    public static partial void BrokerPartitionDropped(ILogger logger, string processor, int partition);

    [LoggerMessage(EventId = 11009, Level = LogLevel.Error, Message = "Stream processor '{Processor}': the late handler threw on a late record of '{Operator}' (event time {EventTime:o}); the record is committed and is not handed to it again")]
    public static partial void LateHandlerFailed(ILogger logger, Exception exception, string processor, string @operator, DateTimeOffset eventTime);
}
