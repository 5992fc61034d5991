using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Herald.Persistence;
using Herald.Sqlite.Internal;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Persistence;

/// <summary>
/// Leader election among every process (and every store) that opens one SQLite file: the leader of a resource holds an
/// exclusive lock on its lock file in <c>{file}-leaders/</c>, opened with <see cref="FileShare.None"/> (flock on Unix, a
/// share mode on Windows). The operating system frees it when the lease is disposed or the process dies, so another node
/// can take over; it is never lost while held. The in-process default let a second process on the same file run its own
/// outbox relay (and projections, saga sweeps) beside the first, sending every row twice.
/// </summary>
/// <remarks>
/// The folder is next to the file SQLite opens, as SQLite names it (an absolute path, through any symbolic link), not as the
/// connection string does: a process naming the file by a URI (<c>file:...</c>), through a link or with
/// <c>|DataDirectory|</c> locked files elsewhere and led beside one naming it by its path.
/// </remarks>
internal sealed class SqliteLeaderElection(string pathOrConnectionString) : ILeaderElection
{
    // Found on first use.
    private string? _directory;

    public ValueTask<LeaderLease?> TryAcquireAsync(string resource, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(resource);
        cancellationToken.ThrowIfCancellationRequested();
        var file = Open(resource, FileAccess.ReadWrite, FileShare.None);
        return ValueTask.FromResult<LeaderLease?>(file is null ? null : new Lease(file, resource));
    }

    public ValueTask<bool> IsLedAsync(string resource, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(resource);
        cancellationToken.ThrowIfCancellationRequested();

        // A shared open looks without taking: two looks at once do not see each other as leaders, a holder refuses both.
        using var look = Open(resource, FileAccess.Read, FileShare.ReadWrite);
        return ValueTask.FromResult(look is null);
    }

    private FileStream? Open(string resource, FileAccess access, FileShare share)
    {
        var directory = _directory ??= OpenedFile() + "-leaders";
        Directory.CreateDirectory(directory);
        try
        {
            return new FileStream(LockFile(directory, resource), FileMode.OpenOrCreate, access, share);
        }
        catch (IOException ex) when (HeldElsewhere(ex))
        {
            return null;
        }
    }

    /// <summary>One file per resource, named by a hash of the name's UTF-16 code units (any text, exactly).</summary>
    private static string LockFile(string directory, string resource) =>
        Path.Combine(directory, Convert.ToHexStringLower(SHA256.HashData(MemoryMarshal.AsBytes(resource.AsSpan())), 0, 16) + ".lock");

    /// <summary>
    /// The file as SQLite names it once open: opens it (creating it, empty, when the election is used before the store
    /// started, which then makes its tables there) and asks.
    /// </summary>
    private string OpenedFile()
    {
        var builder = SqliteConnections.Parse(pathOrConnectionString);
        builder.Mode = SqliteOpenMode.ReadWriteCreate;
        builder.Pooling = false;
        using var connection = new SqliteConnection(builder.ConnectionString);
        connection.Open();
        return connection.DataSource;
    }

    // The sharing violation of a lock another open file holds: EWOULDBLOCK from flock (11 on Linux, 35 on macOS and the
    // BSDs), ERROR_SHARING_VIOLATION or ERROR_LOCK_VIOLATION on Windows. Anything else (no room, no permission) is thrown,
    // so the election's caller logs it instead of waiting for a leader that never comes.
    private static bool HeldElsewhere(IOException ex) =>
        ex.GetType() == typeof(IOException) && (OperatingSystem.IsWindows() ? (ex.HResult & 0xFFFF) is 32 or 33 : ex.HResult is 11 or 35);

    private sealed class Lease(FileStream file, string resource) : LeaderLease(resource)
    {
        protected override ValueTask ReleaseAsync() => file.DisposeAsync();
    }
}
