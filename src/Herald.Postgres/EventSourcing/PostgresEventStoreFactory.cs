using Herald.EventSourcing;
using Npgsql;

namespace Herald.Postgres.EventSourcing;

/// <summary>Creates Herald's PostgreSQL event store without dependency injection (tools, tests, hand-wired hosts).</summary>
public static class PostgresEventStoreFactory
{
    /// <summary>
    /// Creates the event, checkpoint and snapshot store on its own connection pool and brings its schema up to date
    /// (created on first use, migrated under an advisory lock). Dispose it to close the pool.
    /// </summary>
    public static async Task<IEventStoreConnection> CreateAsync(string connectionString, PostgresStoreOptions? options = null, CancellationToken cancellationToken = default) =>
        await PostgresEventStore.CreateAsync(connectionString, options, cancellationToken).ConfigureAwait(false);

    /// <summary>Creates the store on a data source the caller owns (and disposes after the store) and brings its schema up to date.</summary>
    public static async Task<IEventStoreConnection> CreateAsync(NpgsqlDataSource dataSource, PostgresStoreOptions? options = null, CancellationToken cancellationToken = default) =>
        await PostgresEventStore.CreateAsync(dataSource, options, cancellationToken).ConfigureAwait(false);
}
