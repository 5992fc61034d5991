using Herald.Hosting;
using Herald.Internal;
using Herald.Redis;
using Herald.Redis.Internal;
using Herald.Redis.Reliability;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using StackExchange.Redis;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Herald's Redis stores to a Herald host.</summary>
public static class RedisHeraldBuilderExtensions
{
    /// <summary>
    /// Uses Redis for idempotency keys (<see cref="IdempotencyService"/>) and inbox marks, over one shared connection opened
    /// from the StackExchange.Redis <paramref name="configuration"/> string. The host connects when it starts, and fails
    /// naming the server when it cannot. Expiry follows Herald's <see cref="TimeProvider"/> (see <see cref="RedisOptions"/>).
    /// </summary>
    public static HeraldBuilder UseRedis(this HeraldBuilder builder, string configuration, Action<RedisOptions>? configure = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(configuration);
        return AddRedis(builder, options =>
        {
            options.Configuration = configuration;
            configure?.Invoke(options);
        });
    }

    /// <summary>
    /// Uses Redis for idempotency keys and inbox marks over the application's existing <paramref name="multiplexer"/>, which
    /// Herald shares and does not dispose.
    /// </summary>
    public static HeraldBuilder UseRedis(this HeraldBuilder builder, IConnectionMultiplexer multiplexer, Action<RedisOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(multiplexer);
        return AddRedis(builder, options =>
        {
            options.ConnectionMultiplexer = multiplexer;
            configure?.Invoke(options);
        });
    }

    private static HeraldBuilder AddRedis(HeraldBuilder builder, Action<RedisOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var services = builder.Services;
        // Before the caller's configure, which may set a prefix of its own: each application keeps its own keys by default,
        // where every application on the server shared "herald:" and so saw the others' idempotency keys (one app's stored
        // result, or HTTP response, came back to another using the same key).
        services.AddOptions<RedisOptions>().Configure<IServiceProvider>((options, sp) =>
            options.KeyPrefix = RedisOptions.ApplicationKeyPrefix(sp.GetService<IHostEnvironment>()?.ApplicationName));
        services.AddCheckedOptions(configure, RedisOptions.Check);
        services.TryAddSingleton(sp => RedisConnection.Create(
            sp.GetRequiredService<IOptions<RedisOptions>>().Value,
            sp.GetService<ILoggerFactory>()?.CreateLogger("Herald.Redis")));
        // Herald's health check PINGs it: the stores sit behind ports it does not otherwise exercise.
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IServerProbe, RedisConnection>(sp => sp.GetRequiredService<RedisConnection>()));
        services.Replace(ServiceDescriptor.Singleton<IIdempotencyStore>(sp => new RedisIdempotencyStore(
            sp.GetRequiredService<RedisConnection>(),
            sp.GetRequiredService<IOptions<RedisOptions>>().Value.Clone(),
            sp.GetRequiredService<TimeProvider>())));
        services.Replace(ServiceDescriptor.Singleton<IInbox>(sp => new RedisInbox(
            sp.GetRequiredService<RedisConnection>(),
            sp.GetRequiredService<IOptions<RedisOptions>>().Value.Clone(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetService<ILogger<RedisInbox>>())));

        // Connect before Herald's consumer takes any message.
        services.StartWithHost<RedisConnection, RedisConnection>(
            async (connection, cancellationToken) => await connection.ConnectAsync(cancellationToken).ConfigureAwait(false),
            beforeOtherHostedServices: true);
        return builder;
    }
}
