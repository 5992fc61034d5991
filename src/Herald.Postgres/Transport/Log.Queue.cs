using Microsoft.Extensions.Logging;

namespace Herald.Postgres;

/// <summary>The PostgreSQL queue's log messages (event ids 4200-4299; its consumers log through the core leased-queue consumer, 1200-1299).</summary>
internal static partial class Log
{
    [LoggerMessage(4220, LogLevel.Warning, "A grouped commit of {Count} queue sends failed ({SqlState}); sending them one by one")]
    public static partial void QueueSendGroupFailed(ILogger logger, Exception exception, int count, string sqlState);
}
