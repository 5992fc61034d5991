using Herald.Hosting;
using Herald.Internal;
using Herald.Postgres.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the PostgreSQL durable queue to Herald.</summary>
public static class PostgresQueueHeraldBuilderExtensions
{
    /// <summary>
    /// Uses a durable queue in PostgreSQL as this host's transport (replacing the in-memory one). The options are validated
    /// and the schema created or migrated when the host starts.
    /// </summary>
    /// <param name="builder">The Herald builder.</param>
    /// <param name="connectionString">An Npgsql connection string.</param>
    /// <param name="configure">Changes further settings (schema, size limit, lease, poll interval).</param>
    public static HeraldBuilder UsePostgresQueue(this HeraldBuilder builder, string connectionString, Action<PostgresQueueOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        builder.Services.AddCheckedOptions(configure, PostgresQueueOptions.Check);
        return builder.UseStartedTransport(
            sp =>
            {
                var configured = sp.GetRequiredService<IOptions<PostgresQueueOptions>>().Value.Clone();
                configured.TimeProvider ??= sp.GetService<TimeProvider>();
                configured.LoggerFactory ??= sp.GetService<ILoggerFactory>();
                return PostgresQueueTransportFactory.Create(connectionString, configured);
            },
            (transport, cancellationToken) => transport.StartAsync(cancellationToken));
    }
}
