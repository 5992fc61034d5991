using Herald.Sqlite.EventSourcing;
using Herald.EventSourcing;
using Herald.Internal;
using Herald.Transport;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Sqlite.Transport;

/// <summary>Creates the SQLite durable local queue without dependency injection (tests, tools, hand-wired hosts).</summary>
public static class SqliteQueueTransportFactory
{
    /// <summary>
    /// Opens the queue on a file (creating or migrating the schema) with a writer of its own. In a process that also runs a
    /// <see cref="SqliteEventStore"/> on the same file, prefer <see cref="Open(IEventStoreConnection, Action{SqliteQueueOptions}?, TimeProvider?, ILoggerFactory?)"/>.
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
        return await Components.StartOrDisposeAsync(
            Create(options, store: null, timeProvider, loggerFactory),
            static (transport, ct) => transport.InitializeAsync(ct).AsTask(),
            cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Creates the queue in the file of an event store, writing through the store's one grouped writer; the store must outlive
    /// the transport (disposing the transport leaves the store open).
    /// </summary>
    /// <exception cref="ArgumentException">The store is not one of Herald.Sqlite.</exception>
    public static ITransport Open(
        IEventStoreConnection store,
        Action<SqliteQueueOptions>? configure = null,
        TimeProvider? timeProvider = null,
        ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        if (store is not SqliteEventStore sqlite)
        {
            throw new ArgumentException($"The queue shares the writer of a SQLite event store (SqliteEventStoreFactory.OpenAsync), not of a {store.GetType().Name}.", nameof(store));
        }

        // The store's file as a connection string: a path is one only while it holds no '=' (a folder "a=b" is not a key).
        var options = new SqliteQueueOptions { ConnectionString = new SqliteConnectionStringBuilder { DataSource = sqlite.DataSource }.ConnectionString };
        configure?.Invoke(options);
        return Create(options, sqlite, timeProvider, loggerFactory);
    }

    internal static SqliteQueueTransport Create(SqliteQueueOptions options, SqliteEventStore? store, TimeProvider? timeProvider, ILoggerFactory? loggerFactory)
    {
        OptionsProblems.Of(options, SqliteQueueOptions.Check).ThrowIfAny();
        var copy = options.Clone();
        var clock = timeProvider ?? TimeProvider.System;
        var loggers = loggerFactory ?? NullLoggerFactory.Instance;
        var owned = store is null;
        store ??= new SqliteEventStore(copy.ToStoreOptions(), clock, loggers.CreateLogger<SqliteEventStore>());
        return new SqliteQueueTransport(store, owned, copy, clock, loggers.CreateLogger<SqliteQueueTransport>());
    }
}
