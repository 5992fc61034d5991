using Herald.Internal;
using Herald.Postgres.Internal;
using Herald.Transport;
using Npgsql;

namespace Herald.Postgres.Transport;

/// <summary>Creates the PostgreSQL durable queue without dependency injection (tests, tools, hand-wired hosts).</summary>
public static class PostgresQueueTransportFactory
{
    /// <summary>
    /// Creates the queue on a connection pool of its own, creates or migrates its schema and starts listening for
    /// notifications. Dispose the transport to stop its consumers and close the pool.
    /// </summary>
    public static async Task<ITransport> CreateAsync(string connectionString, Action<PostgresQueueOptions>? configure = null, CancellationToken cancellationToken = default)
    {
        var options = new PostgresQueueOptions();
        configure?.Invoke(options);
        return await Components.StartOrDisposeAsync(Create(connectionString, options), static (transport, ct) => transport.StartAsync(ct), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Creates the queue on its own pool without touching the database yet (the DI path; it starts on first use).</summary>
    internal static PostgresQueueTransport Create(string connectionString, PostgresQueueOptions options)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        var validated = options.Clone();
        validated.Validate();
        var builder = PooledDataSource.Builder(connectionString, "herald-queue", validated.LoggerFactory);
        var settings = builder.ConnectionStringBuilder;
        return new PostgresQueueTransport(builder.Build(), ownsDataSource: true, CreateRenewals(settings.ConnectionString, validated), validated);
    }

    /// <summary>
    /// The pool the consumers' lease renewals run on, from the queue's connection string: at most two connections (a
    /// renewal is one short statement per consumer every third of the lease), named <c>&lt;application name&gt;-renewals</c>,
    /// that wait at most <see cref="PostgresQueueOptions.RenewalTimeoutSeconds"/> to connect or for a free connection, and
    /// never multiplexed (a renewal runs synchronously on its consumer's thread). One connection, opened when the first
    /// consumer starts, stays open (a broken one is made again by the next renewal); a second is closed once idle for the
    /// pool's idle lifetime.
    /// </summary>
    internal static NpgsqlDataSource CreateRenewals(string connectionString, PostgresQueueOptions options)
    {
        var bound = options.RenewalTimeoutSeconds;
        var builder = new NpgsqlDataSourceBuilder(connectionString);
        var settings = builder.ConnectionStringBuilder;
        settings.ApplicationName = (string.IsNullOrEmpty(settings.ApplicationName) ? "herald-queue" : settings.ApplicationName) + "-renewals";
        settings.Pooling = true;
        settings.MinPoolSize = 1;
        settings.MaxPoolSize = 2;
        settings.Multiplexing = false;
        settings.Timeout = settings.Timeout > 0 && settings.Timeout < bound ? settings.Timeout : bound;
        if (options.LoggerFactory is not null)
        {
            builder.UseLoggerFactory(options.LoggerFactory);
        }

        return builder.Build();
    }
}
