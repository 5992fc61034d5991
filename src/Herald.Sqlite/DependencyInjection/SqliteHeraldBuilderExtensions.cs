using Herald.Sqlite.Sagas;
using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Internal;
using Herald.Sqlite.DependencyInjection;
using Herald.Persistence;
using Herald.Sqlite;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Persistence;
using Herald.Sqlite.Projections;
using Herald.Sqlite.Reliability;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the SQLite stores to Herald.</summary>
public static class SqliteHeraldBuilderExtensions
{
    /// <summary>
    /// Keeps events, checkpoints, snapshots, dead letters, the outbox, the inbox, idempotency keys, saga instances and read
    /// models in one SQLite file:
    /// registers one store as <see cref="IEventStore"/>, <see cref="ICheckpointStore"/> and <see cref="ISnapshotStore"/>,
    /// replaces the in-memory reliability stores and the scoped <see cref="IUnitOfWork"/> with ones on the same file,
    /// validates the options and opens the file when the host starts, and elects leaders (one outbox relay per file) across
    /// every process on the file with a lock file per resource in <c>{file}-leaders/</c>.
    /// </summary>
    /// <param name="builder">The Herald builder.</param>
    /// <param name="pathOrConnectionString">A file path (<c>herald.db</c>) or a Microsoft.Data.Sqlite connection string.</param>
    /// <param name="configure">Changes further settings (durability, grouping, timeouts).</param>
    public static HeraldBuilder UseSqlite(this HeraldBuilder builder, string pathOrConnectionString, Action<SqliteStoreOptions>? configure = null)
    {
        builder.AddFileOptions(pathOrConnectionString, configure, SqliteStoreOptions.Check);
        builder.Services.Replace(ServiceDescriptor.Singleton<ILeaderElection>(sp =>
            new SqliteLeaderElection(sp.GetRequiredService<IOptions<SqliteStoreOptions>>().Value.ConnectionString)));
        return builder.UsePersistenceStores(new PersistenceRegistration<SqliteEventStore>
        {
            Package = "Herald.Sqlite",
            CreateStore = sp => new SqliteEventStore(
                sp.GetRequiredService<IOptions<SqliteStoreOptions>>().Value,
                sp.GetService<TimeProvider>(),
                sp.GetService<ILoggerFactory>()?.CreateLogger<SqliteEventStore>()),
            StartStore = (store, cancellationToken) => store.InitializeAsync(cancellationToken).AsTask(),
            BeginUnitOfWork = store => new SqliteUnitOfWork(store),
            DeadLetters = store => new SqliteDeadLetterStore(store),
            Outbox = store => new SqliteOutboxStore(store),
            Inbox = (store, time) => new SqliteInbox(store, time),
            Idempotency = (store, time, keyPrefix) => new SqliteIdempotencyStore(store, time, keyPrefix),
            Sagas = store => new SqliteSagaStore(store),
            ReadModels = store => new SqliteReadModelStore(store),
        });
    }
}
