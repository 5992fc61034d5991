using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Herald.Conformance.Faults;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Herald.AspNetCore.Tests;

/// <summary>The health checks against real servers reached through a forwarder the test cuts or freezes: PostgreSQL and Redis.</summary>
public sealed class ServerHealthTests : IAsyncLifetime
{
    private readonly string _schema = TestServers.NewSchema("http_health_");

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => TestServers.DropSchemaAsync(_schema);

    private static async Task<(HttpStatusCode Status, JsonElement Checks)> HealthAsync(TestApp app)
    {
        var response = await app.Client.GetAsync("/health").WaitAsync(TimeSpan.FromSeconds(30));
        return (response.StatusCode, (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("checks"));
    }

    private static string Status(JsonElement checks, string name) => checks.GetProperty(name).GetProperty("status").GetString()!;

    [Fact]
    public async Task PostgresCutOffOrSilent_IsUnhealthyWithinTheTimeout_AndHealthyOnceBack()
    {
        var builder = new NpgsqlConnectionStringBuilder(TestServers.Postgres);
        await using var forwarder = new TcpForwarder(builder.Port);
        builder.Host = "127.0.0.1";
        builder.Port = forwarder.Port;
        await using var app = await TestApp.StartAsync(
            a => a.MapHeraldHealth(),
            h => h.UsePostgres(builder.ConnectionString, o => o.Schema = _schema),
            s => s.AddHealthChecks().AddHerald(o => o.Timeout = TimeSpan.FromSeconds(2)));

        var up = await HealthAsync(app);
        forwarder.Cut();
        var cut = await HealthAsync(app);
        forwarder.Restore();
        var back = await HealthAsync(app);
        forwarder.Freeze();
        var silent = await HealthAsync(app);

        Assert.Equal(HttpStatusCode.OK, up.Status);
        Assert.Equal("Healthy", Status(up.Checks, "herald-event-store"));
        Assert.Equal("Healthy", Status(up.Checks, "herald-dead-letters"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, cut.Status);
        Assert.Equal("Unhealthy", Status(cut.Checks, "herald-event-store"));
        Assert.Equal("Unhealthy", Status(cut.Checks, "herald-dead-letters"));
        Assert.Equal(HttpStatusCode.OK, back.Status);
        Assert.Equal("Healthy", Status(back.Checks, "herald-event-store"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, silent.Status);
        Assert.Equal("Unhealthy", Status(silent.Checks, "herald-event-store"));
        Assert.Contains("did not answer within 2 s", silent.Checks.GetProperty("herald-event-store").GetProperty("description").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task RedisCutOff_IsUnhealthy()
    {
        var redis = TestServers.Redis;
        await using var forwarder = new TcpForwarder(int.Parse(redis[(redis.LastIndexOf(':') + 1)..], System.Globalization.CultureInfo.InvariantCulture));
        await using var app = await TestApp.StartAsync(
            a => a.MapHeraldHealth(),
            h => h.UseRedis($"127.0.0.1:{forwarder.Port},connectTimeout=1000,syncTimeout=1000,asyncTimeout=1000,abortConnect=false"),
            s => s.AddHealthChecks().AddHerald(o => o.Timeout = TimeSpan.FromSeconds(2)));

        var up = await HealthAsync(app);
        forwarder.Cut();
        var cut = await HealthAsync(app);

        Assert.Equal("Healthy", Status(up.Checks, "herald-servers"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, cut.Status);
        Assert.Equal("Unhealthy", Status(cut.Checks, "herald-servers"));
    }
}
