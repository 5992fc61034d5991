using Herald.Sqlite.Internal;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Herald.Sqlite.EventSourcing;

internal sealed partial class SqliteEventStore
{
    // The connection of writes that must not queue behind the grouped writer (lease renewals); opened on first use, used
    // by one caller at a time (the gate), closed with the store.
    private readonly Lock _atOnceGate = new();
    private SqliteConnection? _atOnce;

    /// <summary>
    /// Runs <paramref name="write"/> at once in a transaction of its own on a connection of its own, outside the grouped
    /// writer: for a small write that must not wait behind queued groups (a lease renewal). Synchronous, so a caller on its
    /// own thread needs no thread-pool thread; it waits at most about <paramref name="maxWait"/> for this process's writer
    /// and then for another process's lock on the file, and throws <see cref="TimeoutException"/> or the busy
    /// <see cref="SqliteException"/> beyond that.
    /// </summary>
    internal T WriteAtOnce<T>(Func<SqliteConnection, T> write, TimeSpan maxWait)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) == 1 || _opened is null, this);
        var started = _timeProvider.GetTimestamp();
        if (!_atOnceGate.TryEnter(maxWait))
        {
            throw new TimeoutException($"Another write at once on the SQLite file '{DataSource}' took longer than {maxWait}.");
        }

        try
        {
            if (!_writeLock.Wait(Remaining(maxWait, started)))
            {
                throw new TimeoutException($"The writer of the SQLite file '{DataSource}' held its lock longer than {maxWait}.");
            }

            try
            {
                ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) == 1, this);
                var connection = _atOnce ??= _connections.OpenWriter();

                // Bounds the wait for another process's lock (the provider's own retry does not apply to raw statements), and
                // looks again about every millisecond rather than with SQLite's backoff of up to 100 ms: a busy writer
                // leaves the lock free only for moments, and a renewal that misses them loses its lease.
                raw.sqlite3_busy_timeout(connection.Handle, 1);
                using var begin = new RawStatement(connection, "BEGIN IMMEDIATE");
                var attempts = (int)Math.Max(1, Remaining(maxWait, started).TotalMilliseconds);
                for (var attempt = 1; ; attempt++)
                {
                    try
                    {
                        begin.Execute();
                        break;
                    }
                    catch (SqliteException ex) when (ex.SqliteErrorCode == raw.SQLITE_BUSY && attempt < attempts)
                    {
                        // SQLite waited a millisecond for the lock: look again.
                    }
                }

                try
                {
                    var result = write(connection);
                    SqliteFileGuard.ThrowIfMoved(connection);
                    using var commit = new RawStatement(connection, "COMMIT");
                    commit.Execute();
                    return result;
                }
                catch
                {
                    if (raw.sqlite3_get_autocommit(connection.Handle) == 0)
                    {
                        using var rollback = new RawStatement(connection, "ROLLBACK");
                        rollback.Execute();
                    }

                    throw;
                }
            }
            finally
            {
                _writeLock.Release();
            }
        }
        finally
        {
            _atOnceGate.Exit();
        }
    }

    private void CloseWriteAtOnce()
    {
        lock (_atOnceGate)
        {
            _atOnce?.Dispose();
            _atOnce = null;
        }
    }

    private TimeSpan Remaining(TimeSpan maxWait, long started)
    {
        var left = maxWait - _timeProvider.GetElapsedTime(started);
        return left > TimeSpan.Zero ? left : TimeSpan.Zero;
    }
}
