using System.Runtime.InteropServices;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Herald.Sqlite.Internal;

/// <summary>
/// Refuses a commit into a database file that was deleted, renamed or replaced while open. SQLite then keeps writing to the
/// old file (on Unix, an unlinked inode that vanishes with the last connection), so without this check every later write
/// would be reported durable and then lost.
/// </summary>
internal static class SqliteFileGuard
{
    private const int FileControlHasMoved = 20; // SQLITE_FCNTL_HAS_MOVED
    private static readonly byte[] Main = "main\0"u8.ToArray();

    // SQLitePCLRaw does not wrap sqlite3_file_control; this is the same native library Microsoft.Data.Sqlite loads.
    private static bool _noFileControl;

    /// <summary>Throws <see cref="IOException"/> when the file the connection has open is no longer at its path.</summary>
    public static void ThrowIfMoved(SqliteConnection connection)
    {
        var db = connection.Handle!;
        if (HasMoved(db))
        {
            throw new IOException(
                $"The SQLite file '{raw.sqlite3_db_filename(db, "main").utf8_to_string()}' was deleted, moved or replaced while the store had it open; the write was not committed. Restore the file and restart.");
        }
    }

    private static bool HasMoved(sqlite3 db)
    {
        if (!Volatile.Read(ref _noFileControl))
        {
            try
            {
                var rc = FileControl(db.DangerousGetHandle(), Main, FileControlHasMoved, out var moved);
                if (rc == raw.SQLITE_OK)
                {
                    return moved != 0;
                }
            }
            catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
            {
                Volatile.Write(ref _noFileControl, true);
            }
        }

        // Another SQLite build (or a VFS without the file control): at least a deleted file is caught.
        var path = raw.sqlite3_db_filename(db, "main").utf8_to_string();
        return !string.IsNullOrEmpty(path) && !File.Exists(path);
    }

    [DllImport("e_sqlite3", EntryPoint = "sqlite3_file_control", ExactSpelling = true)]
    private static extern int FileControl(nint db, byte[] databaseName, int operation, out int result);
}
