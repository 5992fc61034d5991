using Microsoft.Extensions.Logging;

namespace Herald.Hosting;

/// <summary>Log messages of retries, dead letters, inbox, outbox and idempotency, with stable event ids (2000-2999; dead-letter retention 1500-1501).</summary>
internal static partial class Log
{
    [LoggerMessage(2001, LogLevel.Warning, "Message {MessageId} ({MessageType}) failed on attempt {Attempt} at '{Endpoint}'; retrying at once")]
    public static partial void RetryingImmediately(ILogger logger, Exception exception, Guid messageId, string messageType, int attempt, string endpoint);

    [LoggerMessage(2014, LogLevel.Debug, "Message {MessageId} ({MessageType}) lost version conflict {Conflict} at '{Endpoint}'; running it again against the fresh state, not counted as a failed attempt: {Reason}")]
    public static partial void RetryingAfterConflict(ILogger logger, Guid messageId, string messageType, int conflict, string endpoint, string reason);

    [LoggerMessage(2002, LogLevel.Error, "Message {MessageId} ({MessageType}) could not be written to the dead-letter store for '{Endpoint}'; it goes to the transport's own dead letters, from which it is drained into the store once the store is back")]
    public static partial void DeadLetterStoreFailed(ILogger logger, Exception exception, Guid messageId, string messageType, string endpoint);

    [LoggerMessage(2007, LogLevel.Information, "Moved {Count} dead letters of '{Endpoint}' from the transport's own dead letters into the dead-letter store")]
    public static partial void NativeDeadLettersDrained(ILogger logger, int count, string endpoint);

    [LoggerMessage(2008, LogLevel.Error, "Message {MessageId} ({MessageType}) could not be moved to the transport's own dead letters of '{Endpoint}' either; it is redelivered in {Delay}")]
    public static partial void NativeDeadLetterFailed(ILogger logger, Exception? exception, Guid messageId, string messageType, string endpoint, TimeSpan delay);

    [LoggerMessage(2009, LogLevel.Warning, "Moving the transport's own dead letters of '{Endpoint}' into the dead-letter store failed; trying again in {Delay}")]
    public static partial void NativeDeadLetterDrainFailed(ILogger logger, Exception exception, string endpoint, TimeSpan delay);

    [LoggerMessage(2013, LogLevel.Warning, "The dead-letter store refused message {MessageId} ({MessageType}) from the transport's own dead letters of '{Endpoint}'; it stays there, and the drain goes on with the others")]
    public static partial void NativeDeadLetterRefused(ILogger logger, Exception exception, Guid messageId, string messageType, string endpoint);

    [LoggerMessage(2003, LogLevel.Warning, "Endpoint '{Endpoint}' holds {Count} dead letters, reaching the alert threshold of {Threshold}")]
    public static partial void DeadLetterThresholdReached(ILogger logger, string endpoint, long count, int threshold);

    [LoggerMessage(2004, LogLevel.Error, "Dead-letter alert hook {Hook} failed for endpoint '{Endpoint}'")]
    public static partial void DeadLetterAlertFailed(ILogger logger, Exception exception, string hook, string endpoint);

    [LoggerMessage(2005, LogLevel.Warning, "Could not count the dead letters of endpoint '{Endpoint}'")]
    public static partial void DeadLetterCountFailed(ILogger logger, Exception exception, string endpoint);

    [LoggerMessage(2010, LogLevel.Information, "Dead letter {DeadLetterId} (message {MessageId}, {MessageType}) taken back to '{Endpoint}'")]
    public static partial void DeadLetterRetried(ILogger logger, Guid deadLetterId, Guid messageId, string messageType, string endpoint);

    [LoggerMessage(2011, LogLevel.Warning, "Dead letter {DeadLetterId} (message {MessageId}, {MessageType}) could not be taken back to '{Endpoint}'; it stays")]
    public static partial void DeadLetterRetryFailed(ILogger logger, Exception exception, Guid deadLetterId, Guid messageId, string messageType, string endpoint);

    [LoggerMessage(2015, LogLevel.Warning, "Dead letter {DeadLetterId} (message {MessageId}, {MessageType}) of '{Endpoint}' was not retried: {Reason}")]
    public static partial void DeadLetterRetryRefused(ILogger logger, Guid deadLetterId, Guid messageId, string messageType, string endpoint, string reason);

    [LoggerMessage(2016, LogLevel.Information, "Dead letter {DeadLetterId} (message {MessageId}, {MessageType}) of '{Endpoint}' was taken back by another retry first; this one wrote nothing")]
    public static partial void DeadLetterRetriedElsewhere(ILogger logger, Guid deadLetterId, Guid messageId, string messageType, string endpoint);

    [LoggerMessage(2012, LogLevel.Information, "{Count} dead letters purged")]
    public static partial void DeadLettersPurged(ILogger logger, long count);

    [LoggerMessage(2020, LogLevel.Information, "Message {MessageId} ({MessageType}) was already handled at '{Endpoint}'; the duplicate is acked without running handlers")]
    public static partial void DuplicateSkipped(ILogger logger, Guid messageId, string messageType, string endpoint);

    [LoggerMessage(2021, LogLevel.Warning, "Inbox cleanup failed; it is tried again in {Delay}")]
    public static partial void InboxCleanupFailed(ILogger logger, Exception exception, TimeSpan delay);

    [LoggerMessage(2030, LogLevel.Warning, "Outbox message {OutboxId} ({MessageType}) could not be sent to {Destination}; the relay backs off and tries again")]
    public static partial void OutboxSendFailed(ILogger logger, Exception exception, Guid outboxId, string messageType, string destination);

    [LoggerMessage(2031, LogLevel.Error, "Outbox message {OutboxId} ({MessageType}) was refused by the transport for {Destination}; it is moved to the dead letters")]
    public static partial void OutboxMessageRejected(ILogger logger, Exception exception, Guid outboxId, string messageType, string destination);

    [LoggerMessage(2032, LogLevel.Error, "The outbox relay could not read or update its store; it backs off for {Delay}")]
    public static partial void OutboxStoreFailed(ILogger logger, Exception exception, TimeSpan delay);

    [LoggerMessage(2033, LogLevel.Warning, "The outbox relay's last pass at shutdown failed; what it did not send stays in the outbox for the next start")]
    public static partial void OutboxLastPassFailed(ILogger logger, Exception exception);

    [LoggerMessage(2040, LogLevel.Warning, "The idempotency lock of key '{Key}' was lost before the operation completed (it outlived the lock timeout); its result was not stored")]
    public static partial void IdempotencyLockLost(ILogger logger, string key);

    [LoggerMessage(2046, LogLevel.Error, "The result of idempotency key '{Key}' cannot be written as JSON; its caller gets it, later callers get an error instead of running the operation again")]
    public static partial void IdempotencyResultNotSerializable(ILogger logger, Exception exception, string key);

    [LoggerMessage(2043, LogLevel.Warning, "The idempotency lock of key '{Key}' was taken by another caller while the operation ran (a renewal found it lost); the operation is cancelled and its result will not be stored")]
    public static partial void IdempotencyLockTaken(ILogger logger, string key);

    [LoggerMessage(2047, LogLevel.Warning, "The idempotency lock of key '{Key}' ran out while its renewals failed (another caller may take the key now); the operation is cancelled")]
    public static partial void IdempotencyLockRanOut(ILogger logger, string key);

    [LoggerMessage(2044, LogLevel.Warning, "Renewing the idempotency lock of key '{Key}' failed; trying again shortly")]
    public static partial void IdempotencyRenewalFailed(ILogger logger, Exception exception, string key);

    [LoggerMessage(2045, LogLevel.Warning, "Storing the result of idempotency key '{Key}' failed; trying again in {Delay} while its lock holds")]
    public static partial void IdempotencyCompleteRetrying(ILogger logger, Exception exception, string key, TimeSpan delay);

    [LoggerMessage(2042, LogLevel.Warning, "The result of idempotency key '{Key}' could not be stored; its caller gets it, later callers run the operation again once the lock times out")]
    public static partial void IdempotencyResultNotStored(ILogger logger, Exception exception, string key);

    [LoggerMessage(2041, LogLevel.Warning, "The idempotency key '{Key}' could not be released after its operation failed; it frees itself when the lock times out")]
    public static partial void IdempotencyReleaseFailed(ILogger logger, Exception exception, string key);

    [LoggerMessage(1500, LogLevel.Information, "Deleted {Count} dead letters of '{Endpoint}' past the retention (DeadLetterOptions.MaxAge, MaxCount)")]
    public static partial void DeadLettersTrimmed(ILogger logger, long count, string endpoint);

    [LoggerMessage(1501, LogLevel.Warning, "Trimming the dead letters of '{Endpoint}' to the retention failed; tried again at the next round")]
    public static partial void DeadLetterTrimFailed(ILogger logger, Exception exception, string endpoint);
}
