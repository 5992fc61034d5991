using Herald.Postgres.Sagas;
using Herald.Hosting;
using Herald.Internal;
using Herald.Persistence;
using Herald.Postgres;
using Herald.Postgres.DependencyInjection;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Persistence;
using Herald.Postgres.Projections;
using Herald.Postgres.Reliability;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Herald's PostgreSQL stores to a Herald host.</summary>
public static class PostgresHeraldBuilderExtensions
{
    /// <summary>
    /// Uses PostgreSQL for the event store, checkpoints, snapshots, dead letters, outbox, inbox, idempotency keys, saga
    /// instances, read models and the scoped unit of work (one store on one connection pool, all in one schema), and elects
    /// leaders (one outbox relay per schema) across processes with session advisory locks. The options are validated and the
    /// schema created or migrated when the host starts.
    /// </summary>
    public static HeraldBuilder UsePostgres(this HeraldBuilder builder, string connectionString, Action<PostgresStoreOptions>? configure = null)
    {
        builder.AddPostgresOptions(connectionString, configure, PostgresStoreOptions.Check);
        builder.Services.Replace(ServiceDescriptor.Singleton<ILeaderElection>(sp => new PostgresLeaderElection(
            sp.GetRequiredService<PostgresEventStore>(),
            (sp.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance).CreateLogger("Herald.Postgres.LeaderElection"))));
        return builder.UsePersistenceStores(new PersistenceRegistration<PostgresEventStore>
        {
            Package = "Herald.Postgres",
            CreateStore = sp => PostgresEventStore.Create(connectionString, sp.ResolvePostgresOptions<PostgresStoreOptions>()),
            StartStore = (store, cancellationToken) => store.StartAsync(cancellationToken),
            BeginUnitOfWork = store => store.BeginUnitOfWork(),
            DeadLetters = store => new PostgresDeadLetterStore(store),
            Outbox = store => new PostgresOutboxStore(store),
            Inbox = (store, time) => new PostgresInbox(store, time),
            Idempotency = (store, time, keyPrefix) => new PostgresIdempotencyStore(store, time, keyPrefix),
            Sagas = store => new PostgresSagaStore(store),
            ReadModels = store => new PostgresReadModelStore(store),
        });
    }
}
