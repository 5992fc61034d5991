using System.Globalization;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Internal;

/// <summary>Opens the store's connections to one file with the settings every connection needs.</summary>
internal sealed class SqliteConnections
{
    /// <summary>
    /// The size the write-ahead log is cut back to when a writer starts it over after a checkpoint (journal_size_limit):
    /// without it the file keeps the size of its largest burst. Above the ~4 MB the log reaches between two automatic
    /// checkpoints (1000 pages), so ordinary writes never shrink and regrow it.
    /// </summary>
    public const long JournalSizeLimit = 6 * 1024 * 1024;

    private readonly string _creatingConnectionString;
    private readonly string _writerConnectionString;
    private readonly string _readerConnectionString;
    private readonly string _pragmas;
    private readonly string _readerPragmas;

    public SqliteConnections(SqliteStoreOptions options)
    {
        var builder = Parse(options.ConnectionString);
        DataSource = builder.DataSource;

        // The store keeps its own connections (one writer, a pool of readers), so the provider's pool stays out of the way
        // and disposing the store really closes the file.
        builder.Pooling = false;
        // The provider's own retry on a busy file, in whole seconds; 0 would mean "retry forever".
        builder.DefaultTimeout = Math.Max(1, (int)Math.Ceiling(options.BusyTimeout.TotalSeconds));
        builder.Mode = SqliteOpenMode.ReadWriteCreate;
        _creatingConnectionString = builder.ConnectionString;
        // Only the store's first connection creates the file: one opened later (writes at once, an open append) into a
        // file deleted meanwhile made a new empty database there, took the write and was opened by the next start.
        builder.Mode = SqliteOpenMode.ReadWrite;
        _writerConnectionString = builder.ConnectionString;
        builder.Mode = SqliteOpenMode.ReadWrite;
        _readerConnectionString = builder.ConnectionString;

        var busy = ((long)options.BusyTimeout.TotalMilliseconds).ToString(CultureInfo.InvariantCulture);
        var synchronous = options.Synchronous == SqliteSynchronousMode.Full ? "FULL" : "NORMAL";
        _pragmas = $"PRAGMA busy_timeout = {busy}; PRAGMA foreign_keys = ON; PRAGMA synchronous = {synchronous}; PRAGMA journal_size_limit = {JournalSizeLimit.ToString(CultureInfo.InvariantCulture)};";
        _readerPragmas = $"PRAGMA busy_timeout = {busy}; PRAGMA query_only = ON;";
    }

    /// <summary>The file, as named in the connection string.</summary>
    public string DataSource { get; }

    /// <summary>Parses a path or a connection string; a value without '=' is a path.</summary>
    public static SqliteConnectionStringBuilder Parse(string pathOrConnectionString)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(pathOrConnectionString);
        return pathOrConnectionString.Contains('=', StringComparison.Ordinal)
            ? new SqliteConnectionStringBuilder(pathOrConnectionString)
            : new SqliteConnectionStringBuilder { DataSource = pathOrConnectionString };
    }

    /// <summary>
    /// Opens the store's first connection, creating the file when missing. A file SQLite cannot open or create fails with
    /// its path named (SQLite's own message names none), and the missing folder when that is the cause.
    /// </summary>
    public SqliteConnection OpenCreating()
    {
        try
        {
            return Open(_creatingConnectionString, _pragmas);
        }
        catch (SqliteException ex) when (ex.SqliteErrorCode == SQLitePCL.raw.SQLITE_CANTOPEN)
        {
            throw new SqliteException(CannotOpen(DataSource, ex.Message), ex.SqliteErrorCode, ex.SqliteExtendedErrorCode);
        }
    }

    /// <summary>Opens a connection that writes: busy timeout, foreign keys and the configured durability.</summary>
    public SqliteConnection OpenWriter() => Open(_writerConnectionString, _pragmas);

    /// <summary>Opens a connection that only reads.</summary>
    public SqliteConnection OpenReader() => Open(_readerConnectionString, _readerPragmas);

    private static string CannotOpen(string dataSource, string cause)
    {
        var folder = dataSource.StartsWith("file:", StringComparison.OrdinalIgnoreCase) ? null : Path.GetDirectoryName(Path.GetFullPath(dataSource));
        var hint = folder is not null && !Directory.Exists(folder)
            ? $"its folder '{folder}' does not exist; create it first"
            : "check that the path names a file and that the process may read and write it and its folder";
        return $"The SQLite file '{dataSource}' could not be opened or created: {hint} ({cause}).";
    }

    private static SqliteConnection Open(string connectionString, string pragmas)
    {
        var connection = new SqliteConnection(connectionString);
        try
        {
            connection.Open();
            using var command = connection.CreateCommand();
#pragma warning disable CA2100 // Built from constants and numbers formatted here, no outside text.
            command.CommandText = pragmas;
#pragma warning restore CA2100
            command.ExecuteNonQuery();
            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }
}
