using Herald.Internal;
using Herald.Sqlite.Internal;

namespace Herald.Sqlite.Transport;

/// <summary>Settings of the SQLite durable local queue: the file, the size limit, leases and how often other processes' work is looked for.</summary>
public sealed class SqliteQueueOptions : ISqliteFileOptions
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

    /// <summary>Adds every setting that is out of range to <paramref name="problems"/>; the file settings follow the store's rules.</summary>
    internal static void Check(SqliteQueueOptions options, OptionsProblems problems)
    {
        SqliteStoreOptions.CheckFile(options, problems);
        problems.Between(nameof(MaxMessageBytes), options.MaxMessageBytes, 0, SqliteStoreOptions.LargestBlob);
        problems.Between(nameof(LeaseDuration), options.LeaseDuration, TimeSpan.FromMilliseconds(100), TimeSpan.FromDays(1), "100 ms and one day");
        problems.Between(nameof(PollInterval), options.PollInterval, TimeSpan.FromMilliseconds(10), TimeSpan.FromMinutes(10), "10 ms and ten minutes");

        // A write waiting longer than this for the file's lock could outlast the lease it renews (issue 10).
        if (options.BusyTimeout > options.LeaseDuration / 3)
        {
            problems.Add(nameof(BusyTimeout), $"is {options.BusyTimeout}; it must be at most a third of LeaseDuration ({options.LeaseDuration}).");
        }
    }

    /// <summary>The store settings for a file the queue opens itself.</summary>
    internal SqliteStoreOptions ToStoreOptions() => new()
    {
        ConnectionString = ConnectionString,
        Synchronous = Synchronous,
        BusyTimeout = BusyTimeout,
    };

    /// <summary>A copy, so later changes by the caller do not reach a running queue.</summary>
    internal SqliteQueueOptions Clone() => (SqliteQueueOptions)MemberwiseClone();
}
