using Herald.EventSourcing;
using Microsoft.Extensions.Logging;

namespace Herald.Sqlite.EventSourcing;

/// <summary>Opens Herald's SQLite event store without dependency injection (tools, tests, hand-wired hosts).</summary>
public static class SqliteEventStoreFactory
{
    /// <summary>
    /// Opens the event, checkpoint and snapshot store on a file path or connection string (creating or migrating the
    /// schema). Dispose it to finish the queued writes and close the file.
    /// </summary>
    public static async Task<IEventStoreConnection> OpenAsync(string pathOrConnectionString, Action<SqliteStoreOptions>? configure = null, CancellationToken cancellationToken = default) =>
        await SqliteEventStore.OpenAsync(pathOrConnectionString, configure, cancellationToken).ConfigureAwait(false);

    /// <summary>
    /// Creates the store without opening the file yet (it opens on first use); <paramref name="options"/> are validated
    /// (an invalid setting throws <see cref="Microsoft.Extensions.Options.OptionsValidationException"/>) and copied.
    /// </summary>
    public static IEventStoreConnection Create(SqliteStoreOptions options, TimeProvider? timeProvider = null, ILogger? logger = null) =>
        new SqliteEventStore(options, timeProvider, logger);
}
