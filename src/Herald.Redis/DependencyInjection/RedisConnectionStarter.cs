using Microsoft.Extensions.Hosting;

namespace Herald.Redis.DependencyInjection;

/// <summary>Connects to Redis when the host starts, so a wrong host or a server that is down fails the start, named.</summary>
internal sealed class RedisConnectionStarter(RedisConnection connection) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken) => await connection.ConnectAsync(cancellationToken).ConfigureAwait(false);

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
