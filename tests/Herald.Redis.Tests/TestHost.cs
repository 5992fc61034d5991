using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Redis.Tests;

/// <summary>Starts a Herald host (one application node) on the real Redis server.</summary>
internal static class TestHost
{
    public static HostApplicationBuilder CreateBuilder(Action<HeraldBuilder> configure, string? applicationName = null)
    {
        var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings { ApplicationName = applicationName });
        builder.Services.AddLogging();
        builder.Services.AddHerald(h =>
        {
            h.Configure(o => o.EndpointName = "redis-tests");
            configure(h);
        });
        return builder;
    }

    public static async Task<RunningHost> StartAsync(RedisFixture redis, Action<RedisOptions>? configure = null)
    {
        var host = CreateBuilder(h => h.UseRedis(RedisFixture.Configuration, o =>
        {
            o.KeyPrefix = redis.KeyPrefix;
            configure?.Invoke(o);
        })).Build();
        await host.StartAsync();
        return new RunningHost(host);
    }
}

/// <summary>A started host that stops and disposes itself asynchronously.</summary>
internal sealed class RunningHost(IHost host) : IAsyncDisposable
{
    public IServiceProvider Services => host.Services;

    public async ValueTask DisposeAsync()
    {
        await host.StopAsync();
        await ((IAsyncDisposable)host).DisposeAsync();
    }
}
