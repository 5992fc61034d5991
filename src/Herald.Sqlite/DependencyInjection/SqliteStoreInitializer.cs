using Herald.Sqlite.EventSourcing;
using Microsoft.Extensions.Hosting;

namespace Herald.Sqlite.DependencyInjection;

/// <summary>Opens the SQLite store when the host starts, so a missing directory or a newer schema fails the start, not the first command.</summary>
internal sealed class SqliteStoreInitializer(SqliteEventStore store) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => store.InitializeAsync(cancellationToken).AsTask();

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
