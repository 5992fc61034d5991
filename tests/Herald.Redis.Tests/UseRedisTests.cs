using Herald.Redis.Internal;
using Herald.Redis.Reliability;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using StackExchange.Redis;

namespace Herald.Redis.Tests;

/// <summary>The builder extension: what it registers, the one shared connection, and failing at start.</summary>
public sealed class UseRedisTests(RedisFixture redis) : IClassFixture<RedisFixture>
{
    [Fact]
    public async Task UseRedis_ReplacesTheInMemoryStores_WithRedisOnes()
    {
        await using var host = await TestHost.StartAsync(redis);

        Assert.IsType<RedisIdempotencyStore>(host.Services.GetRequiredService<IIdempotencyStore>());
        Assert.IsType<RedisInbox>(host.Services.GetRequiredService<IInbox>());
    }

    [Fact]
    public async Task BothStores_ShareOneConnection()
    {
        var name = "herald-test-" + Guid.NewGuid().ToString("N");
        var reference = "herald-test-" + Guid.NewGuid().ToString("N");
        await using var host = await TestHost.StartAsync(redis, o => o.Configuration = $"{RedisFixture.Configuration},name={name}");
        await host.Services.GetRequiredService<IIdempotencyStore>().TryAcquireAsync("shared-" + Guid.NewGuid().ToString("N"), TimeSpan.FromSeconds(30));
        await host.Services.GetRequiredService<IInbox>().TryMarkHandledAsync("shared", Guid.CreateVersion7(), TimeSpan.FromMinutes(1));
        await using var one = await ConnectionMultiplexer.ConnectAsync($"{RedisFixture.Configuration},name={reference}");
        await one.GetDatabase().PingAsync();

        var oneConnection = await CountClientsAsync(reference);
        Assert.True(oneConnection > 0, "the reference connection shows in CLIENT LIST");
        Assert.Equal(oneConnection, await CountClientsAsync(name));
    }

    [Fact]
    public async Task ServerThatCannotBeReached_FailsTheStart_NamingTheHost_ButNotThePassword()
    {
        using var host = TestHost.CreateBuilder(h => h.UseRedis("127.0.0.1:1,connectTimeout=2000,password=not-for-logs")).Build();

        var failure = await Assert.ThrowsAsync<HeraldException>(() => host.StartAsync());

        Assert.Contains("127.0.0.1:1", failure.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("not-for-logs", failure.Message, StringComparison.Ordinal);
        Assert.IsAssignableFrom<RedisException>(failure.InnerException);
    }

    [Fact]
    public async Task ServerThatCannotBeReached_FailsTheFirstCall_WhenUsedWithoutAHost()
    {
        var options = new RedisOptions { Configuration = "127.0.0.1:1,connectTimeout=2000", KeyPrefix = redis.KeyPrefix };
        await using var connection = RedisConnection.Create(options);
        var store = new RedisIdempotencyStore(connection, options, TimeProvider.System);

        var failure = await Assert.ThrowsAsync<HeraldException>(async () => await store.TryAcquireAsync("k", TimeSpan.FromSeconds(1)));

        Assert.Contains("127.0.0.1:1", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TheConnection_IsMadeBeforeAnyOtherHostedServiceStarts()
    {
        var builder = TestHost.CreateBuilder(h => h.UseRedis(RedisFixture.Configuration));

        var first = builder.Services.First(d => d.ServiceType == typeof(IHostedService));

        // The starter is the core's component starter for the Redis connection.
        Assert.Equal(typeof(RedisConnection), first.ImplementationType!.GetGenericArguments()[^1]);
        Assert.Single(builder.Services, d => d.ImplementationType == first.ImplementationType);
    }

    /// <summary>
    /// A time setting too long passed the start and threw on every call: ExpiryGrace overflowed the ttl it is added to,
    /// InboxPendingTimeout is renewed on a timer.
    /// </summary>
    [Theory]
    [InlineData(nameof(RedisOptions.ExpiryGrace))]
    [InlineData(nameof(RedisOptions.InboxPendingTimeout))]
    public async Task ATimeSettingTooLongToWaitOrAddToADate_FailsTheStartNamingIt(string setting)
    {
        using var host = TestHost.CreateBuilder(h => h.UseRedis(RedisFixture.Configuration, o => typeof(RedisOptions).GetProperty(setting)!.SetValue(o, TimeSpan.MaxValue))).Build();

        var failure = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());

        Assert.Contains(failure.Failures, f => f.Contains(setting, StringComparison.Ordinal));
    }

    [Fact]
    public async Task WrongOptions_FailTheStart_NamingEachSetting()
    {
        using var host = TestHost.CreateBuilder(h => h.UseRedis(RedisFixture.Configuration, o =>
        {
            o.InboxPendingTimeout = TimeSpan.Zero;
            o.ExpiryGrace = TimeSpan.FromSeconds(-1);
        })).Build();

        var failure = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());

        Assert.Contains("InboxPendingTimeout", failure.Message, StringComparison.Ordinal);
        Assert.Contains("ExpiryGrace", failure.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// A brace in the key prefix makes (or unmakes) a Redis Cluster hash tag in every key: "x{}:" left the inbox's
    /// "{inbox}" tag without effect, so a mark and the expiry index it is written with in one script fell in different
    /// slots (CROSSSLOT on a cluster: slots 145 and 320), and "{t}:" put every idempotency key in one slot.
    /// </summary>
    [Theory]
    [InlineData("app{}:")]
    [InlineData("{tenant}:")]
    [InlineData("app{:")]
    [InlineData("app}:")]
    public async Task AKeyPrefixHoldingABrace_FailsTheStart_NamingTheHashTagItWouldMake(string prefix)
    {
        using var host = TestHost.CreateBuilder(h => h.UseRedis(RedisFixture.Configuration, o => o.KeyPrefix = prefix)).Build();

        var failure = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());

        Assert.Contains(failure.Failures, f => f.Contains("KeyPrefix", StringComparison.Ordinal) && f.Contains("hash tag", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AnExistingMultiplexer_IsSharedAndNotDisposedWithTheHost()
    {
        var multiplexer = await redis.ConnectAsync();
        var host = TestHost.CreateBuilder(h => h.UseRedis(multiplexer, o => o.KeyPrefix = redis.KeyPrefix)).Build();
        await host.StartAsync();
        var key = "given-" + Guid.NewGuid().ToString("N");
        var acquired = await host.Services.GetRequiredService<IIdempotencyStore>().TryAcquireAsync(key, TimeSpan.FromSeconds(30));
        Assert.Equal(IdempotencyAcquireStatus.Acquired, acquired.Status);

        await host.StopAsync();
        await ((IAsyncDisposable)host).DisposeAsync();

        Assert.True(multiplexer.IsConnected);
        Assert.True(await multiplexer.GetDatabase().KeyExistsAsync(RedisKeys.Build(redis.KeyPrefix + "idempotency:", key)));
    }

    [Fact]
    public async Task TheDefaultKeyPrefix_KeepsEachApplicationsIdempotencyKeys_AndSharesThemBetweenItsInstances()
    {
        // Every application on the server shared "herald:", so one reusing another's key got the other's stored result
        // (and, through Herald.AspNetCore, its HTTP response) instead of running its own operation.
        var app = "herald-test-app-" + Guid.NewGuid().ToString("N");
        var other = "herald-test-other-" + Guid.NewGuid().ToString("N");
        var key = "charge-" + Guid.NewGuid().ToString("N");
        await using var multiplexer = await redis.ConnectAsync();
        var ran = new List<string>();
        foreach (var name in new[] { app, other, app })
        {
            var host = TestHost.CreateBuilder(h => h.UseRedis(multiplexer), name).Build();
            await host.StartAsync();
            try
            {
                var result = await host.Services.GetRequiredService<IdempotencyService>()
                    .ExecuteAsync(key, _ => ValueTask.FromResult(name), TimeSpan.FromMinutes(1));
                ran.Add(result);
            }
            finally
            {
                await host.StopAsync();
                await ((IAsyncDisposable)host).DisposeAsync();
            }
        }

        Assert.Equal([app, other, app], ran);
        Assert.True(await multiplexer.GetDatabase().KeyExistsAsync(RedisKeys.Build($"herald:{app}:idempotency:", key)));
        await multiplexer.GetDatabase().KeyDeleteAsync([RedisKeys.Build($"herald:{app}:idempotency:", key), RedisKeys.Build($"herald:{other}:idempotency:", key)]);
    }

    [Fact]
    public void TheDefaultKeyPrefix_KeepsBracesOfTheApplicationNameOutOfRedisClusterHashTags() =>
        Assert.Equal("herald:my(app):", RedisOptions.ApplicationKeyPrefix("my{app}"));

    private async Task<int> CountClientsAsync(string name)
    {
        var list = (string?)await redis.Multiplexer.GetDatabase().ExecuteAsync("CLIENT", "LIST") ?? string.Empty;
        return list.Split('\n').Count(line => line.Contains($" name={name} ", StringComparison.Ordinal));
    }
}
