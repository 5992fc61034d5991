using Herald.Hosting;
using Herald.Internal;
using Herald.Sqlite.DependencyInjection;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Internal;
using Herald.Sqlite.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the SQLite durable local queue to Herald.</summary>
public static class SqliteQueueHeraldBuilderExtensions
{
    /// <summary>
    /// Uses a durable queue in a SQLite file as this host's transport (replacing the in-memory one). When <c>UseSqlite</c>
    /// names the same file, the queue writes through the store's one writer, so both live in one file with one writer.
    /// The options are validated and the file opened when the host starts.
    /// </summary>
    /// <param name="builder">The Herald builder.</param>
    /// <param name="pathOrConnectionString">A file path (<c>herald.db</c>) or a Microsoft.Data.Sqlite connection string.</param>
    /// <param name="configure">Changes further settings (size limit, lease, poll interval).</param>
    public static HeraldBuilder UseSqliteQueue(this HeraldBuilder builder, string pathOrConnectionString, Action<SqliteQueueOptions>? configure = null)
    {
        builder.AddFileOptions(pathOrConnectionString, configure, SqliteQueueOptions.Check);
        return builder.UseStartedTransport(
            sp =>
            {
                var options = sp.GetRequiredService<IOptions<SqliteQueueOptions>>().Value;
                var store = sp.GetService<SqliteEventStore>();
                var shared = store is not null && SameFile(store.DataSource, options.ConnectionString) ? store : null;
                return SqliteQueueTransportFactory.Create(options, shared, sp.GetService<TimeProvider>(), sp.GetService<ILoggerFactory>());
            },
            (transport, cancellationToken) => transport.InitializeAsync(cancellationToken).AsTask());
    }

    private static bool SameFile(string storeDataSource, string queueConnectionString) =>
        string.Equals(
            Path.GetFullPath(storeDataSource),
            Path.GetFullPath(SqliteConnections.Parse(queueConnectionString).DataSource),
            OperatingSystem.IsWindows() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal);
}
