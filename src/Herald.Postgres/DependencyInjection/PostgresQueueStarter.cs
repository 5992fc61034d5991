using Herald.Postgres.Transport;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Postgres.DependencyInjection;

/// <summary>Creates or migrates the queue's schema when the host starts, so a bad connection string fails the start, not the first send.</summary>
internal sealed class PostgresQueueStarter(IServiceProvider services) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) =>
        services.GetRequiredService<ITransport>() is PostgresQueueTransport transport ? transport.StartAsync(cancellationToken) : Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
