using Herald.Sqlite.Persistence;
using Herald.Sqlite.DependencyInjection;
using Herald.Sqlite.EventSourcing;
using Herald.Persistence;
using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Sqlite;
using Herald.Sqlite.Reliability;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the SQLite stores to Herald.</summary>
public static class SqliteHeraldBuilderExtensions
{
    /// <summary>
    /// Keeps events, checkpoints, snapshots, dead letters, the outbox, the inbox and idempotency keys in one SQLite file:
    /// registers one <see cref="SqliteEventStore"/> as <see cref="IEventStore"/>, <see cref="ICheckpointStore"/> and
    /// <see cref="ISnapshotStore"/>, replaces the in-memory reliability stores and the scoped <see cref="IUnitOfWork"/> with
    /// ones on the same file, validates the options and opens the file when the host starts. Leader election stays the
    /// core's in-process default: the file serves one process by design, so the host's own relay is the one leader.
    /// </summary>
    /// <param name="builder">The Herald builder.</param>
    /// <param name="pathOrConnectionString">A file path (<c>herald.db</c>) or a Microsoft.Data.Sqlite connection string.</param>
    /// <param name="configure">Changes further settings (durability, grouping, timeouts).</param>
    public static HeraldBuilder UseSqlite(this HeraldBuilder builder, string pathOrConnectionString, Action<SqliteStoreOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(pathOrConnectionString);
        var services = builder.Services;
        services.AddOptions<SqliteStoreOptions>()
            .Configure(options =>
            {
                options.ConnectionString = pathOrConnectionString;
                configure?.Invoke(options);
            })
            .ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<SqliteStoreOptions>, SqliteStoreOptionsValidator>());
        services.TryAddSingleton(sp => new SqliteEventStore(
            sp.GetRequiredService<IOptions<SqliteStoreOptions>>().Value,
            sp.GetService<TimeProvider>(),
            sp.GetService<ILoggerFactory>()?.CreateLogger<SqliteEventStore>()));
        services.Replace(ServiceDescriptor.Singleton<IEventStore>(sp => sp.GetRequiredService<SqliteEventStore>()));
        services.Replace(ServiceDescriptor.Singleton<ICheckpointStore>(sp => sp.GetRequiredService<SqliteEventStore>()));
        services.Replace(ServiceDescriptor.Singleton<ISnapshotStore>(sp => sp.GetRequiredService<SqliteEventStore>()));
        services.Replace(ServiceDescriptor.Singleton<IDeadLetterStore>(sp => new SqliteDeadLetterStore(sp.GetRequiredService<SqliteEventStore>())));
        services.Replace(ServiceDescriptor.Singleton<IOutboxStore>(sp => new SqliteOutboxStore(sp.GetRequiredService<SqliteEventStore>())));
        services.Replace(ServiceDescriptor.Singleton<IInbox>(sp => new SqliteInbox(sp.GetRequiredService<SqliteEventStore>(), sp.GetService<TimeProvider>())));
        services.Replace(ServiceDescriptor.Singleton<IIdempotencyStore>(sp =>
            new SqliteIdempotencyStore(sp.GetRequiredService<SqliteEventStore>(), sp.GetService<TimeProvider>())));
        builder.UsePersistence("Herald.Sqlite", sp => new SqliteUnitOfWork(sp.GetRequiredService<SqliteEventStore>()));
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, SqliteStoreInitializer>());
        return builder;
    }
}
