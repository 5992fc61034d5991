using Herald.Internal;
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
        var builder = new NpgsqlDataSourceBuilder(connectionString);
        var settings = builder.ConnectionStringBuilder;
        if (string.IsNullOrEmpty(settings.ApplicationName))
        {
            settings.ApplicationName = "herald-queue";
        }

        // A handful of hot statements: let Npgsql prepare them unless the connection string says otherwise.
        if (settings.MaxAutoPrepare == 0)
        {
            settings.MaxAutoPrepare = 32;
            settings.AutoPrepareMinUsages = 2;
        }

        if (validated.LoggerFactory is not null)
        {
            builder.UseLoggerFactory(validated.LoggerFactory);
        }

        return new PostgresQueueTransport(builder.Build(), ownsDataSource: true, validated);
    }
}
