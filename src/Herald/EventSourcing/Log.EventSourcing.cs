using Microsoft.Extensions.Logging;

namespace Herald.Hosting;

/// <summary>The log messages of the event-store subscriptions, the stored-event publisher and the aggregate repository (event ids 1100-1199).</summary>
internal static partial class Log
{
    [LoggerMessage(1101, LogLevel.Warning, "Publishing stored event {EventType} at position {Position} failed (attempt {Attempt}); trying again in {Delay}")]
    public static partial void StoredEventPublishFailed(ILogger logger, Exception exception, string eventType, long position, int attempt, TimeSpan delay);

    [LoggerMessage(1102, LogLevel.Error, "The transport refuses stored event {EventType} at position {Position} for good; it is moved to the dead letters")]
    public static partial void StoredEventRejected(ILogger logger, Exception exception, string eventType, long position);

    [LoggerMessage(1103, LogLevel.Error, "Stored event {EventType} at position {Position} could not be moved to the dead letters; it is published again after the back-off")]
    public static partial void StoredEventDeadLetterFailed(ILogger logger, Exception exception, string eventType, long position);

    [LoggerMessage(1120, LogLevel.Warning, "The snapshot of stream {Stream} at version {Version} could not be restored; the aggregate is loaded from all its events")]
    public static partial void SnapshotRestoreFailed(ILogger logger, Exception exception, string stream, long version);

    [LoggerMessage(1121, LogLevel.Warning, "The events of stream {Stream} are saved up to version {Version}, but their snapshot could not be stored; a later save takes one")]
    public static partial void SnapshotSaveFailed(ILogger logger, Exception exception, string stream, long version);

    [LoggerMessage(1122, LogLevel.Warning, "The snapshot of stream {Stream} at version {Version} could not be taken; the events are saved without it and a later save takes one")]
    public static partial void SnapshotNotTaken(ILogger logger, Exception exception, string stream, long version);

    [LoggerMessage(1110, LogLevel.Warning, "Subscription '{SubscriptionId}' could not read the event store or save its checkpoint at position {Position}; trying again in {Delay}")]
    public static partial void SubscriptionStoreFailed(ILogger logger, Exception exception, string subscriptionId, long position, TimeSpan delay);

    [LoggerMessage(1111, LogLevel.Error, "Subscription '{SubscriptionId}' moved the stored event at position {Position}, which no longer reads, to the dead letters and goes on past it")]
    public static partial void SubscriptionUnreadableEventDeadLettered(ILogger logger, Exception exception, string subscriptionId, long position);
}
