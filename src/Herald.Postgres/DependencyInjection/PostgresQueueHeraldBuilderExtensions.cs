using Herald.Hosting;
using Herald.Internal;
using Herald.Postgres.DependencyInjection;
using Herald.Postgres.Transport;

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
        builder.AddPostgresOptions(connectionString, configure, PostgresQueueOptions.Check);
        return builder.UseStartedTransport(
            sp => PostgresQueueTransportFactory.Create(connectionString, sp.ResolvePostgresOptions<PostgresQueueOptions>()),
            (transport, cancellationToken) => transport.StartAsync(cancellationToken));
    }
}
