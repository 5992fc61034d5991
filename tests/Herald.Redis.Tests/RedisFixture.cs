using Herald.Persistence;
using Herald.Reliability;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Herald.Redis.Tests;

/// <summary>
/// The Redis server that scripts/services.sh started (or the one HERALD_TEST_REDIS names), with a key prefix of this test
/// class's own; every key under it is deleted when the class is done.
/// </summary>
public sealed class RedisFixture : IAsyncLifetime
{
    private readonly List<ConnectionMultiplexer> _connections = [];
    private ServiceProvider? _services;

    public static string Configuration =>
        Environment.GetEnvironmentVariable("HERALD_TEST_REDIS") is { Length: > 0 } configured ? configured : "127.0.0.1:6379";

    public string KeyPrefix { get; } = $"herald-test:{Guid.NewGuid():N}:";

    public IConnectionMultiplexer Multiplexer => _connections[0];

    /// <summary>Another connection, as a second node of the application would have.</summary>
    public async Task<IConnectionMultiplexer> ConnectAsync()
    {
        var connection = await ConnectionMultiplexer.ConnectAsync(Configuration);
        lock (_connections)
        {
            _connections.Add(connection);
        }

        return connection;
    }

    /// <summary>Options on this fixture's prefix over the given (or the first) connection.</summary>
    public RedisOptions Options(IConnectionMultiplexer? multiplexer = null, Action<RedisOptions>? configure = null)
    {
        var options = new RedisOptions { ConnectionMultiplexer = multiplexer ?? Multiplexer, KeyPrefix = KeyPrefix };
        configure?.Invoke(options);
        return options;
    }

    /// <summary>A unit of work as Herald creates it for each attempt (the in-memory one: callbacks only).</summary>
    public IUnitOfWork BeginUnitOfWork()
    {
        _services ??= new ServiceCollection().AddLogging().AddHerald().BuildServiceProvider();
        return _services.CreateAsyncScope().ServiceProvider.GetRequiredService<IUnitOfWork>();
    }

    public async Task InitializeAsync() => await ConnectAsync();

    public async Task DisposeAsync()
    {
        var database = Multiplexer.GetDatabase();
        foreach (var server in Multiplexer.GetServers())
        {
            var keys = new List<RedisKey>();
            await foreach (var key in server.KeysAsync(pattern: KeyPrefix + "*", pageSize: 500))
            {
                keys.Add(key);
            }

            foreach (var chunk in keys.Chunk(500))
            {
                await database.KeyDeleteAsync(chunk);
            }
        }

        if (_services is not null)
        {
            await _services.DisposeAsync();
        }

        foreach (var connection in _connections)
        {
            await connection.DisposeAsync();
        }
    }

    /// <summary>How many keys live under this fixture's prefix.</summary>
    public async Task<int> CountKeysAsync()
    {
        var count = 0;
        foreach (var server in Multiplexer.GetServers())
        {
            await foreach (var _ in server.KeysAsync(pattern: KeyPrefix + "*", pageSize: 500))
            {
                count++;
            }
        }

        return count;
    }
}
