using Microsoft.Extensions.Logging;

namespace Herald.Postgres;

/// <summary>
/// Herald.Postgres log messages, with stable event ids (4000-4999); the queue's consumers log through the core leased-queue
/// consumer (1200-1299).
/// </summary>
internal static partial class Log
{
    [LoggerMessage(4001, LogLevel.Information, "PostgreSQL schema '{Schema}' migrated from version {From} to {To}")]
    public static partial void SchemaMigrated(ILogger logger, string schema, int from, int to);

    [LoggerMessage(4010, LogLevel.Debug, "Listening for appends on channel '{Channel}' (backend {ProcessId})")]
    public static partial void Listening(ILogger logger, string channel, int processId);

    [LoggerMessage(4011, LogLevel.Warning, "The notification connection for channel '{Channel}' failed; waiting readers poll until it reconnects in {Delay}")]
    public static partial void ListenerFailed(ILogger logger, Exception exception, string channel, TimeSpan delay);

    [LoggerMessage(4012, LogLevel.Warning, "Could not notify channel '{Channel}' after a commit; readers elsewhere wake on the next notification or their fallback re-check")]
    public static partial void NotifyFailed(ILogger logger, Exception exception, string channel);

    [LoggerMessage(4013, LogLevel.Warning, "This store's own appends up to position {Own} are still not readable in $all after {Timeout}: a transaction open elsewhere in the database (an old 'idle in transaction' session in pg_stat_activity) holds the readable head back; the read returns what is readable, up to position {Readable}. To wait for your own appends, wait for the position AppendAsync returned")]
    public static partial void OwnAppendsHeldBack(ILogger logger, long own, TimeSpan timeout, long readable);

    [LoggerMessage(4020, LogLevel.Warning, "A grouped commit of {Count} {Kind} failed ({SqlState}); running them one by one")]
    public static partial void GroupFailed(ILogger logger, Exception exception, int count, string kind, string sqlState);

    [LoggerMessage(4021, LogLevel.Warning, "An append coordinator connection failed; {Count} appends of the group report the error")]
    public static partial void WriterConnectionFailed(ILogger logger, Exception exception, int count);

    [LoggerMessage(4040, LogLevel.Warning, "The queue's tables in PostgreSQL schema '{Schema}' are missing (dropped behind Herald's back); making them again")]
    public static partial void QueueTablesMissing(ILogger logger, Exception exception, string schema);

    [LoggerMessage(4041, LogLevel.Debug, "Could not open the lease renewals' connection of the queue in PostgreSQL schema '{Schema}' ahead of the first renewal, which connects by itself")]
    public static partial void RenewalConnectionNotOpened(ILogger logger, Exception exception, string schema);

    [LoggerMessage(4022, LogLevel.Warning, "A pooled PostgreSQL connection had been cut (a failover, an idle timeout, a proxy restart); clearing the pool and running the statement again on a new connection")]
    public static partial void PooledConnectionCut(ILogger logger, Exception exception);

    [LoggerMessage(4030, LogLevel.Warning, "Lost the leadership of '{Resource}' in schema '{Schema}': the connection holding its lock failed")]
    public static partial void LeadershipLost(ILogger logger, Exception exception, string resource, string schema);
}
