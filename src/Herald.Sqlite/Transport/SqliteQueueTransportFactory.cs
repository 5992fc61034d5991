using Herald.Sqlite.EventSourcing;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Sqlite.Transport;

/// <summary>Creates the SQLite durable local queue without dependency injection (tests, tools, hand-wired hosts).</summary>
public static class SqliteQueueTransportFactory
{
    /// <summary>
    /// Opens the queue on a file (creating or migrating the schema) with a writer of its own. In a process that also runs a
    /// <see cref="SqliteEventStore"/> on the same file, prefer <see cref="Open(SqliteEventStore, Action{SqliteQueueOptions}?, TimeProvider?, ILoggerFactory?)"/>.
    /// </summary>
    public static async Task<ITransport> OpenAsync(
        string pathOrConnectionString,
        Action<SqliteQueueOptions>? configure = null,
        TimeProvider? timeProvider = null,
        ILoggerFactory? loggerFactory = null,
        CancellationToken cancellationToken = default)
    {
        var options = new SqliteQueueOptions { ConnectionString = pathOrConnectionString };
        configure?.Invoke(options);
        var transport = Create(options, store: null, timeProvider, loggerFactory);
        try
        {
            await transport.InitializeAsync(cancellationToken).ConfigureAwait(false);
            return transport;
        }
        catch
        {
            await transport.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Creates the queue in the file of an event store, writing through the store's one grouped writer; the store must outlive
    /// the transport (disposing the transport leaves the store open).
    /// </summary>
    public static ITransport Open(
        SqliteEventStore store,
        Action<SqliteQueueOptions>? configure = null,
        TimeProvider? timeProvider = null,
        ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        var options = new SqliteQueueOptions { ConnectionString = store.DataSource };
        configure?.Invoke(options);
        return Create(options, store, timeProvider, loggerFactory);
    }

    internal static SqliteQueueTransport Create(SqliteQueueOptions options, SqliteEventStore? store, TimeProvider? timeProvider, ILoggerFactory? loggerFactory)
    {
        SqliteQueueOptions.ThrowIfInvalid(options);
        var copy = options.Clone();
        var clock = timeProvider ?? TimeProvider.System;
        var loggers = loggerFactory ?? NullLoggerFactory.Instance;
        var owned = store is null;
        store ??= new SqliteEventStore(copy.ToStoreOptions(), clock, loggers.CreateLogger<SqliteEventStore>());
        return new SqliteQueueTransport(store, owned, copy, clock, loggers.CreateLogger<SqliteQueueTransport>());
    }
}
