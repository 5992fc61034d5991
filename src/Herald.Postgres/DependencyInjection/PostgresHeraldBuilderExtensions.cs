using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Postgres;
using Herald.Postgres.DependencyInjection;
using Herald.Postgres.EventSourcing;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Herald's PostgreSQL stores to a Herald host.</summary>
public static class PostgresHeraldBuilderExtensions
{
    /// <summary>
    /// Uses PostgreSQL for the event store, checkpoints and snapshots (one <see cref="PostgresEventStore"/> singleton on one
    /// connection pool). The schema is created or migrated when the host starts.
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
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, PostgresStoreStarter>());
        return builder;
    }
}
