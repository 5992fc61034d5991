namespace Herald.Sqlite.Transport;

/// <summary>Settings of the SQLite durable local queue: the file, the size limit, leases and how often other processes' work is looked for.</summary>
public sealed class SqliteQueueOptions
{
    /// <summary>The database: a file path or a Microsoft.Data.Sqlite connection string; the same file as the event store when both are used.</summary>
    public string ConnectionString { get; set; } = string.Empty;

    /// <summary>Largest message body accepted, in bytes (1 MiB by default); larger ones are refused before anything is written.</summary>
    public int MaxMessageBytes { get; set; } = 1024 * 1024;

    /// <summary>
    /// How long a claimed message stays reserved for its consumer. The lease is renewed every third of this while the
    /// consumer holds the message, so a handler may run as long as it needs; a consumer that dies gives its messages back
    /// when their lease runs out (30 s by default).
    /// </summary>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Longest a consumer sleeps before it looks at the queue again (1 s by default). Sends in this process wake consumers at
    /// once and delays wake them when due; this only bounds how late another process's sends and dead consumers' leases are noticed.
    /// </summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Durability of commits when the queue opens the file itself; when it shares an event store's file, the store's setting applies.</summary>
    public SqliteSynchronousMode Synchronous { get; set; } = SqliteSynchronousMode.Full;

    private TimeSpan? _busyTimeout;

    /// <summary>
    /// How long a write waits for another process's lock on the file, when the queue opens the file itself. At most a third
    /// of <see cref="LeaseDuration"/>, so a renewal stuck behind a lock gives up while the lease still holds; by default
    /// exactly that (10 s with the default lease).
    /// </summary>
    public TimeSpan BusyTimeout
    {
        get => _busyTimeout ?? LeaseDuration / 3;
        set => _busyTimeout = value;
    }
}
