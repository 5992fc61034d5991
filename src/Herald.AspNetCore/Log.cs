using Microsoft.Extensions.Logging;

namespace Herald.AspNetCore;

/// <summary>Herald.AspNetCore log messages, with stable event ids (10000-10999).</summary>
internal static partial class Log
{
    [LoggerMessage(10001, LogLevel.Error, "Unhandled exception answered 500 on {Method} {Path}")]
    public static partial void UnhandledException(ILogger logger, Exception exception, string method, string path);

    [LoggerMessage(10002, LogLevel.Information, "{ExceptionType} answered {Status} on {Method} {Path}: {Reason}")]
    public static partial void MappedException(ILogger logger, string exceptionType, int status, string method, string path, string reason);

    [LoggerMessage(10010, LogLevel.Debug, "Rejected the X-Correlation-Id header of {Method} {Path}: {Reason}")]
    public static partial void InvalidCorrelationId(ILogger logger, string method, string path, string reason);

    [LoggerMessage(10020, LogLevel.Debug, "Rejected {Method} {Path} with {Status}: {Reason}")]
    public static partial void RequestRejected(ILogger logger, string method, string path, int status, string reason);

    [LoggerMessage(10030, LogLevel.Debug, "Replayed the stored response ({Status}) of idempotency key on {Method} {Path}")]
    public static partial void IdempotentReplay(ILogger logger, int status, string method, string path);

    [LoggerMessage(10031, LogLevel.Information, "Idempotency key on {Method} {Path} is still in flight; answered 409")]
    public static partial void IdempotencyInFlight(ILogger logger, string method, string path);

    [LoggerMessage(10032, LogLevel.Information, "Idempotency key on {Method} {Path} was reused with another request; answered 422")]
    public static partial void IdempotencyMismatch(ILogger logger, string method, string path);

    [LoggerMessage(10033, LogLevel.Warning, "Could not release the idempotency key of a failed {Method} {Path}; a retry waits until its lock expires")]
    public static partial void IdempotencyReleaseFailed(ILogger logger, Exception exception, string method, string path);

    [LoggerMessage(10034, LogLevel.Warning, "The response of {Method} {Path} was sent but not stored for its idempotency key; a retry after the lock expires runs again")]
    public static partial void IdempotencyNotStored(ILogger logger, Exception exception, string method, string path);

    [LoggerMessage(10035, LogLevel.Warning, "The idempotency lock of {Method} {Path} was lost while it ran (it outlived the lock timeout); its response is not stored")]
    public static partial void IdempotencyLockLost(ILogger logger, string method, string path);

    [LoggerMessage(10036, LogLevel.Warning, "The response of {Method} {Path} ({Bytes} bytes) is larger than the idempotency store keeps ({Limit} bytes); the key is released instead")]
    public static partial void IdempotencyResponseTooLarge(ILogger logger, string method, string path, long bytes, long limit);

    [LoggerMessage(10040, LogLevel.Warning, "The idempotency lock of {Method} {Path} ran out while its renewals failed (another request may take the key now); the request is aborted")]
    public static partial void IdempotencyLockRanOut(ILogger logger, string method, string path);

    [LoggerMessage(10037, LogLevel.Warning, "Renewing the idempotency lock of {Method} {Path} failed; trying again shortly")]
    public static partial void IdempotencyRenewalFailed(ILogger logger, Exception exception, string method, string path);

    [LoggerMessage(10038, LogLevel.Error, "The stored response of the idempotency key on {Method} {Path} cannot be read; answered 500 without running it again")]
    public static partial void IdempotencyStoredResponseUnreadable(ILogger logger, string method, string path);

    [LoggerMessage(10039, LogLevel.Warning, "Storing the response of {Method} {Path} for its idempotency key failed; trying again in {Delay}")]
    public static partial void IdempotencyCompleteRetrying(ILogger logger, Exception exception, string method, string path, TimeSpan delay);
}
