namespace Herald.Sqlite;

/// <summary>SQLite's <c>synchronous</c> setting in WAL mode: how hard a commit waits for the disk.</summary>
public enum SqliteSynchronousMode
{
    /// <summary>Syncs at checkpoints only: a commit survives a crash of the process, but the last commits may be lost on power loss.</summary>
    Normal = 1,

    /// <summary>Syncs the write-ahead log on every commit: a commit survives power loss.</summary>
    Full = 2,
}
