using System.Collections.Concurrent;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Internal;

/// <summary>
/// Read-only connections, reused with their prepared statements. In WAL mode readers never wait for the writer and each
/// statement sees whole commits only. Up to <see cref="SqliteStoreOptions.ReaderPoolSize"/> idle connections are kept.
/// </summary>
internal sealed class ReaderPool : IDisposable
{
    private readonly SqliteConnections _connections;
    private readonly int _size;
    private readonly ConcurrentQueue<Reader> _idle = new();
    private int _idleCount;
    private volatile bool _disposed;

    public ReaderPool(SqliteConnections connections, int size)
    {
        _connections = connections;
        _size = size;
    }

    public Reader Rent()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_idle.TryDequeue(out var reader))
        {
            Interlocked.Decrement(ref _idleCount);
            return reader;
        }

        return new Reader(_connections.OpenReader());
    }

    public void Return(Reader reader)
    {
        if (_disposed)
        {
            reader.Dispose();
            return;
        }

        if (Interlocked.Increment(ref _idleCount) > _size)
        {
            Interlocked.Decrement(ref _idleCount);
            reader.Dispose();
            return;
        }

        _idle.Enqueue(reader);
        if (_disposed)
        {
            // Disposed while this one was being returned: close what is left.
            Drain();
        }
    }

    public void Dispose()
    {
        _disposed = true;
        Drain();
    }

    private void Drain()
    {
        while (_idle.TryDequeue(out var reader))
        {
            Interlocked.Decrement(ref _idleCount);
            reader.Dispose();
        }
    }

    /// <summary>One reader connection and the statements prepared on it, keyed by their SQL text.</summary>
    internal sealed class Reader : IDisposable
    {
        private readonly SqliteConnection _connection;
        private readonly Dictionary<string, SqliteCommand> _commands = new(StringComparer.Ordinal);

        public Reader(SqliteConnection connection) => _connection = connection;

        /// <summary>The command for this SQL (a constant of the caller), created once per connection; set its parameters by index.</summary>
        public SqliteCommand Command(string sql, int parameterCount)
        {
            if (!_commands.TryGetValue(sql, out var command))
            {
                command = _connection.CreateCommand();
#pragma warning disable CA2100 // Only the store's constant statements come here; values go through parameters.
                command.CommandText = sql;
#pragma warning restore CA2100
                for (var i = 0; i < parameterCount; i++)
                {
                    command.Parameters.Add(new SqliteParameter { ParameterName = "$p" + i.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                }

                _commands[sql] = command;
            }

            return command;
        }

        /// <summary>
        /// Runs several queries in one read transaction, so they all see the same commits: a query that depends on what an
        /// earlier one found (such as which table to read) never sees a write that landed in between.
        /// </summary>
        public T InSnapshot<T>(Func<T> read)
        {
            // A plain BEGIN on a WAL file starts a read transaction at the first read, taking no lock a writer waits for.
            Command("BEGIN", 0).ExecuteNonQuery();
            try
            {
                return read();
            }
            finally
            {
                Command("COMMIT", 0).ExecuteNonQuery();
            }
        }

        public void Dispose()
        {
            foreach (var command in _commands.Values)
            {
                command.Dispose();
            }

            _connection.Dispose();
        }
    }
}
