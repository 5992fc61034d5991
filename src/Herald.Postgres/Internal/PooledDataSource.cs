using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Postgres.Internal;

/// <summary>How the event store and the queue build the connection pool they own from a connection string.</summary>
internal static class PooledDataSource
{
    /// <summary>
    /// A builder over <paramref name="connectionString"/> with <paramref name="applicationName"/> where the string names
    /// none, Npgsql's automatic preparation on (32 statements, from their second use) unless the string says otherwise,
    /// since the statements are few and hot, and <paramref name="loggerFactory"/> when given.
    /// </summary>
    public static NpgsqlDataSourceBuilder Builder(string connectionString, string applicationName, ILoggerFactory? loggerFactory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        var builder = new NpgsqlDataSourceBuilder(connectionString);
        var settings = builder.ConnectionStringBuilder;
        if (string.IsNullOrEmpty(settings.ApplicationName))
        {
            settings.ApplicationName = applicationName;
        }

        if (settings.MaxAutoPrepare == 0)
        {
            settings.MaxAutoPrepare = 32;
            settings.AutoPrepareMinUsages = 2;
        }

        if (loggerFactory is not null)
        {
            builder.UseLoggerFactory(loggerFactory);
        }

        return builder;
    }
}
