namespace Herald.Conformance;

/// <summary>
/// Deletes a SQLite database file the tests made, with everything that sits beside it: the WAL, shared-memory and journal
/// files, and the <c>{file}-leaders/</c> folder of UseSqlite's leader election (one lock file per elected resource).
/// </summary>
public static class SqliteFiles
{
    /// <summary>Deletes <paramref name="file"/> and its companions; what is missing is skipped.</summary>
    public static void Delete(string file)
    {
        ArgumentException.ThrowIfNullOrEmpty(file);
        foreach (var suffix in new[] { "", "-wal", "-shm", "-journal" })
        {
            File.Delete(file + suffix);
        }

        if (Directory.Exists(file + "-leaders"))
        {
            Directory.Delete(file + "-leaders", recursive: true);
        }
    }
}
