namespace Herald.Sqlite.Internal;

/// <summary>The file settings every SQLite options type has (the store's and the queue's), checked by the same rules.</summary>
internal interface ISqliteFileOptions
{
    /// <summary>A file path or a Microsoft.Data.Sqlite connection string.</summary>
    string ConnectionString { get; set; }

    /// <summary>When a commit counts as durable.</summary>
    SqliteSynchronousMode Synchronous { get; }

    /// <summary>How long a statement waits for another connection's lock.</summary>
    TimeSpan BusyTimeout { get; }
}
