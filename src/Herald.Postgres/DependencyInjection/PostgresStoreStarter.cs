using Herald.Postgres.EventSourcing;
using Microsoft.Extensions.Hosting;

namespace Herald.Postgres.DependencyInjection;

/// <summary>Creates or migrates the schema when the host starts, so a bad connection string or schema fails the start.</summary>
internal sealed class PostgresStoreStarter(PostgresEventStore store) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => store.StartAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
