using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Postgres;
using Herald.Postgres.DependencyInjection;
using Herald.Persistence;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Persistence;
using Herald.Postgres.Reliability;
using Herald.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Herald's PostgreSQL stores to a Herald host.</summary>
public static class PostgresHeraldBuilderExtensions
{
    /// <summary>
    /// Uses PostgreSQL for the event store, checkpoints, snapshots, dead letters, outbox, inbox, idempotency keys and the
    /// scoped unit of work (one <see cref="PostgresEventStore"/> singleton on one connection pool, all in one schema), and
    /// elects leaders (one outbox relay per schema) across processes with session advisory locks.
    /// The schema is created or migrated when the host starts.
    /// </summary>
    public static HeraldBuilder UsePostgres(this HeraldBuilder builder, string connectionString, Action<PostgresStoreOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        var services = builder.Services;
        var optionsBuilder = services.AddOptions<PostgresStoreOptions>();
        if (configure is not null)
        {
            optionsBuilder.Configure(configure);
        }

        optionsBuilder.ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<PostgresStoreOptions>, PostgresStoreOptionsValidator>());
        services.Replace(ServiceDescriptor.Singleton(sp =>
        {
            var configured = sp.GetRequiredService<IOptions<PostgresStoreOptions>>().Value.Clone();
            configured.TimeProvider ??= sp.GetService<TimeProvider>();
            configured.LoggerFactory ??= sp.GetService<ILoggerFactory>();
            return PostgresEventStore.Create(connectionString, configured);
        }));
        services.Replace(ServiceDescriptor.Singleton<IEventStore>(sp => sp.GetRequiredService<PostgresEventStore>()));
        services.Replace(ServiceDescriptor.Singleton<ICheckpointStore>(sp => sp.GetRequiredService<PostgresEventStore>()));
        services.Replace(ServiceDescriptor.Singleton<ISnapshotStore>(sp => sp.GetRequiredService<PostgresEventStore>()));
        services.Replace(ServiceDescriptor.Singleton<IDeadLetterStore>(sp => new PostgresDeadLetterStore(sp.GetRequiredService<PostgresEventStore>())));
        services.Replace(ServiceDescriptor.Singleton<IOutboxStore>(sp => new PostgresOutboxStore(sp.GetRequiredService<PostgresEventStore>())));
        services.Replace(ServiceDescriptor.Singleton<IInbox>(sp => new PostgresInbox(sp.GetRequiredService<PostgresEventStore>(), sp.GetService<TimeProvider>())));
        services.Replace(ServiceDescriptor.Singleton<IIdempotencyStore>(sp =>
            new PostgresIdempotencyStore(sp.GetRequiredService<PostgresEventStore>(), sp.GetService<TimeProvider>())));
        services.Replace(ServiceDescriptor.Singleton<ILeaderElection>(sp => new PostgresLeaderElection(
            sp.GetRequiredService<PostgresEventStore>(),
            (sp.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance).CreateLogger("Herald.Postgres.LeaderElection"))));
        builder.UsePersistence("Herald.Postgres", sp => sp.GetRequiredService<PostgresEventStore>().BeginUnitOfWork());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, PostgresStoreStarter>());
        return builder;
    }
}
