using Herald.EventSourcing;

namespace Herald.Sqlite;

/// <summary>Settings of the SQLite stores: the file, its durability, and how writes are grouped into transactions.</summary>
public sealed class SqliteStoreOptions
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
}
