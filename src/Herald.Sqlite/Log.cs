using Microsoft.Extensions.Logging;

namespace Herald.Sqlite;

/// <summary>Herald.Sqlite's log messages, with stable event ids (3000-3999).</summary>
internal static partial class Log
{
    [LoggerMessage(3001, LogLevel.Information, "SQLite store opened on '{DataSource}' (schema version {SchemaVersion}, journal {JournalMode}, synchronous {Synchronous})")]
    public static partial void Opened(ILogger logger, string dataSource, long schemaVersion, string journalMode, SqliteSynchronousMode synchronous);

    [LoggerMessage(3002, LogLevel.Information, "Applied Herald schema migration {Version} ({Description}) to '{DataSource}'")]
    public static partial void MigrationApplied(ILogger logger, long version, string description, string dataSource);

    [LoggerMessage(3003, LogLevel.Information, "SQLite store on '{DataSource}' closed")]
    public static partial void Closed(ILogger logger, string dataSource);

    [LoggerMessage(3010, LogLevel.Error, "A write transaction of {Writes} write(s) on '{DataSource}' failed and was rolled back; each caller got the error")]
    public static partial void WriteGroupFailed(ILogger logger, Exception exception, int writes, string dataSource);

    [LoggerMessage(3011, LogLevel.Warning, "Rolling back a failed write transaction on '{DataSource}' failed too")]
    public static partial void RollbackFailed(ILogger logger, Exception exception, string dataSource);

    [LoggerMessage(3020, LogLevel.Debug, "Events up to position {Position} on '{DataSource}' were found by the re-check for other processes' writes")]
    public static partial void ExternalWritesSeen(ILogger logger, long position, string dataSource);
}
