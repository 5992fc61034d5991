using Microsoft.Extensions.Logging;

namespace Herald.Redis;

/// <summary>Herald.Redis log messages, with stable event ids (12000-12999).</summary>
internal static partial class Log
{
    [LoggerMessage(12010, LogLevel.Debug, "Inbox mark of message {MessageId} at '{Endpoint}' is held by an uncommitted unit of work; waiting for its outcome")]
    public static partial void InboxWaitingForPendingMark(ILogger logger, Guid messageId, string endpoint);

    [LoggerMessage(12011, LogLevel.Warning,
        "The committed inbox mark of message {MessageId} at '{Endpoint}' could not be made final (tried twice); it lapses after the pending timeout, and a duplicate arriving later runs again")]
    public static partial void InboxCommitFailed(ILogger logger, Exception exception, Guid messageId, string endpoint);

    [LoggerMessage(12012, LogLevel.Warning,
        "The inbox mark of message {MessageId} at '{Endpoint}' could not be removed after a rollback (tried twice); its retry waits until the mark lapses after the pending timeout")]
    public static partial void InboxRollbackFailed(ILogger logger, Exception exception, Guid messageId, string endpoint);

    [LoggerMessage(12013, LogLevel.Warning,
        "The pending inbox mark of message {MessageId} at '{Endpoint}' was lost while its unit of work was open (it lapsed and another delivery marked the message); this commit will not make it final")]
    public static partial void InboxPendingMarkLost(ILogger logger, Guid messageId, string endpoint);

    [LoggerMessage(12015, LogLevel.Warning, "The pending inbox mark of message {MessageId} at '{Endpoint}' ran out while its renewals failed (another consumer may take the message now); its handling is cancelled")]
    public static partial void InboxPendingMarkRanOut(ILogger logger, Guid messageId, string endpoint);

    [LoggerMessage(12014, LogLevel.Warning, "Renewing the pending inbox mark of message {MessageId} at '{Endpoint}' failed; trying again shortly")]
    public static partial void InboxPendingMarkRenewalFailed(ILogger logger, Exception exception, Guid messageId, string endpoint);
}
