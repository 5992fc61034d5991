using Microsoft.Extensions.Logging;

namespace Herald.AmazonSqs;

/// <summary>The Amazon SQS transport's log messages, with stable event ids (9000-9999); the rest go through the core's shared adapter and leased-queue messages.</summary>
internal static partial class Log
{
    [LoggerMessage(9001, LogLevel.Warning, "Message {MessageId} of '{Queue}', received before its due time, could not be held back; it comes back when its visibility timeout ends and is held back then")]
    public static partial void HoldBackFailed(ILogger logger, Exception exception, Guid messageId, string queue);

    [LoggerMessage(9002, LogLevel.Warning, "Message {MessageId} of '{Queue}' was held back as a new copy, but the received one could not be deleted; it comes back when its visibility timeout ends and is held back again, so the message is delivered twice (consumers deduplicate by id)")]
    public static partial void HeldBackOriginalNotDeleted(ILogger logger, Exception? exception, Guid messageId, string queue);

    [LoggerMessage(9003, LogLevel.Warning, "Message {MessageId} of '{Queue}' was nacked, but a copy carrying its headers would be too large for SQS; it is hidden for {Delay} instead and comes back without them")]
    public static partial void NackCopyTooLarge(ILogger logger, Exception exception, Guid messageId, string queue, TimeSpan delay);

    [LoggerMessage(9004, LogLevel.Warning, "Message {MessageId} of '{Queue}', received before its due time, is too large for SQS to take a copy of; it is hidden until due instead (up to 12 hours a receive)")]
    public static partial void HeldBackCopyTooLarge(ILogger logger, Exception exception, Guid messageId, string queue);

    [LoggerMessage(9005, LogLevel.Warning, "The dead-letter copy of message {MessageId} of '{Queue}' would be too large for SQS with its reason and record; it goes without its body of {Bytes} bytes, the reason saying so")]
    public static partial void DeadLetterBodyLeftOut(ILogger logger, Exception exception, Guid messageId, string queue, int bytes);

    [LoggerMessage(9006, LogLevel.Warning, "The dead-letter copy of message {MessageId} of '{Queue}' would be too large for SQS even without its body; it goes without {LeftOut}, the reason saying so")]
    public static partial void DeadLetterHeadersLeftOut(ILogger logger, Exception exception, Guid messageId, string queue, string leftOut);

    [LoggerMessage(9007, LogLevel.Warning, "Message {MessageId} of '{Queue}' was nacked for {Delay}, but a copy carrying its due time would be too large for SQS, and one visibility change holds it at most {Hidden}; it comes back after that, before its delay is over, one receive higher")]
    public static partial void NackDelayCut(ILogger logger, Exception exception, Guid messageId, string queue, TimeSpan delay, TimeSpan hidden);
}
