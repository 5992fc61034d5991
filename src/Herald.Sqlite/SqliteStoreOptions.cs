using Herald.EventSourcing;
using Herald.Internal;
using Herald.Sqlite.Internal;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite;

/// <summary>Settings of the SQLite stores: the file, its durability, and how writes are grouped into transactions.</summary>
public sealed class SqliteStoreOptions : ISqliteFileOptions
{
    /// <summary>
    /// The database: a file path (<c>herald.db</c>) or a Microsoft.Data.Sqlite connection string (<c>Data Source=herald.db</c>).
    /// A path that itself contains '=' must be given as a connection string. The file is created when missing.
    /// </summary>
    public string ConnectionString { get; set; } = string.Empty;

    /// <summary>
    /// When a commit counts as durable. <see cref="SqliteSynchronousMode.Full"/> (the default) syncs the log on every commit and
    /// survives power loss; <see cref="SqliteSynchronousMode.Normal"/> survives a crash of the process but may lose the last
    /// commits on power loss, in exchange for faster commits.
    /// </summary>
    public SqliteSynchronousMode Synchronous { get; set; } = SqliteSynchronousMode.Full;

    /// <summary>How long a statement waits for a lock held by another connection or process before failing (SQLite busy_timeout).</summary>
    public TimeSpan BusyTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Largest event body accepted, in bytes.</summary>
    public int MaxEventBytes { get; set; } = AppendValidation.DefaultMaxEventBytes;

    /// <summary>Most writes (appends, deletes, checkpoints, snapshots) committed together in one transaction.</summary>
    public int MaxWritesPerTransaction { get; set; } = 256;

    /// <summary>
    /// How long the writer waits for more writes before it starts a transaction. Zero (the default) still groups: writes that
    /// arrive while a commit is syncing go into the next transaction together. A small delay trades latency for larger groups.
    /// </summary>
    public TimeSpan GroupCommitDelay { get; set; } = TimeSpan.Zero;

    /// <summary>How many writes may wait for the writer; callers beyond it wait for room (back-pressure).</summary>
    public int WriteQueueCapacity { get; set; } = 4096;

    /// <summary>
    /// How often a waiting subscription re-checks the file for events another process appended. Appends made through this
    /// store wake waiters at once; this interval only bounds how late another process's events are noticed.
    /// </summary>
    public TimeSpan ExternalWritesCheckInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How many idle reader connections are kept open for reuse.</summary>
    public int ReaderPoolSize { get; set; } = 8;

    /// <summary>A copy, so later changes by the caller do not reach a running store.</summary>
    internal SqliteStoreOptions Clone() => (SqliteStoreOptions)MemberwiseClone();

    // SQLite refuses values longer than its SQLITE_MAX_LENGTH (1,000,000,000 bytes in the bundled build).
    internal const int LargestBlob = 1_000_000_000;

    /// <summary>Adds every setting that is out of range to <paramref name="problems"/>.</summary>
    internal static void Check(SqliteStoreOptions options, OptionsProblems problems)
    {
        CheckFile(options, problems);
        problems.Between(nameof(MaxEventBytes), options.MaxEventBytes, 1, LargestBlob);
        problems.AtLeast(nameof(MaxWritesPerTransaction), options.MaxWritesPerTransaction, 1);
        problems.Between(nameof(GroupCommitDelay), options.GroupCommitDelay, TimeSpan.Zero, TimeSpan.FromSeconds(1), "zero and one second");
        problems.AtLeast(nameof(WriteQueueCapacity), options.WriteQueueCapacity, 1);
        if (options.ExternalWritesCheckInterval <= TimeSpan.Zero || options.ExternalWritesCheckInterval > TimeSpan.FromMinutes(10))
        {
            problems.Add(nameof(ExternalWritesCheckInterval), $"is {options.ExternalWritesCheckInterval}; it must be above zero and at most ten minutes.");
        }

        problems.AtLeast(nameof(ReaderPoolSize), options.ReaderPoolSize, 0);
    }

    /// <summary>The checks of the file settings, shared by every options type that opens a file (the queue's too).</summary>
    internal static void CheckFile(ISqliteFileOptions options, OptionsProblems problems)
    {
        if (FileProblem(options.ConnectionString) is { } problem)
        {
            problems.Add(nameof(ConnectionString), problem);
        }

        if (!Enum.IsDefined(options.Synchronous))
        {
            problems.Add(nameof(Synchronous), $"is {options.Synchronous}, not a mode; use Full or Normal.");
        }

        problems.Between(nameof(BusyTimeout), options.BusyTimeout, TimeSpan.Zero, TimeSpan.FromDays(1), "zero and one day");
    }

    private static string? FileProblem(string connectionString)
    {
        if (string.IsNullOrWhiteSpace(connectionString))
        {
            return "is empty; give the file path, e.g. UseSqlite(\"herald.db\").";
        }

        try
        {
            var builder = SqliteConnections.Parse(connectionString);
            if (string.IsNullOrWhiteSpace(builder.DataSource))
            {
                return "names no file (Data Source).";
            }

            if (builder.Mode == SqliteOpenMode.Memory || builder.DataSource.Trim() == ":memory:")
            {
                return "names an in-memory database; each connection would see its own. Use a file, or InMemoryEventStore.";
            }

            return builder.Mode == SqliteOpenMode.ReadOnly ? "opens the file read-only; the store writes to it." : null;
        }
        catch (ArgumentException ex)
        {
            return $"is not a valid connection string: {UserInfo.Redact(ex.Message)}";
        }
    }
}
