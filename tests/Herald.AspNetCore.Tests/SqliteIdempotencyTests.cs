using System.Net;
using Herald.Cqrs;
using Herald.Reliability.Idempotency;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.AspNetCore.Tests;

public sealed class SqliteIdempotencyTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("herald-aspnet-").FullName;

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    private Task<TestApp> StartAsync(string? applicationName = null) => TestApp.StartAsync(
        app => app.MapPost("/orders", async (PlaceOrder command, HttpContext http, ICommandBus bus, Observed observed, CancellationToken ct) =>
        {
            observed.Run();
            await bus.SendAsync(command, http.GetEventMetadata(), ct);
            return Results.Accepted($"/orders/{command.OrderId}", new { command.OrderId, at = Guid.CreateVersion7() });
        }).AcceptsJson<PlaceOrder>().WithIdempotencyKey(),
        h => h.UseSqlite(Path.Combine(_directory, "herald.db")),
        applicationName: applicationName);

    [Fact]
    public async Task ResponseStoredInTheSqliteIdempotencyStore_IsReplayed_AfterTheApplicationRestarts()
    {
        byte[] firstBody;
        await using (var app = await StartAsync())
        {
            Assert.Equal("SqliteIdempotencyStore", app.Services.GetRequiredService<IIdempotencyStore>().GetType().Name);
            var first = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"s-1","quantity":1}""", "durable-1"));
            Assert.Equal(HttpStatusCode.Accepted, first.StatusCode);
            firstBody = await first.Content.ReadAsByteArrayAsync();
        }

        await using var restarted = await StartAsync();
        var replay = await restarted.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"s-1","quantity":1}""", "durable-1"));
        var mismatch = await restarted.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"s-1","quantity":2}""", "durable-1"));

        Assert.Equal(HttpStatusCode.Accepted, replay.StatusCode);
        Assert.Equal("true", Assert.Single(replay.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal("/orders/s-1", replay.Headers.Location?.OriginalString);
        Assert.Equal(firstBody, await replay.Content.ReadAsByteArrayAsync());
        Assert.Equal(HttpStatusCode.UnprocessableEntity, mismatch.StatusCode);
        Assert.Equal(0, restarted.Services.GetRequiredService<Observed>().Runs);
    }

    // Two applications on one database shared its idempotency keys: the second one sending a key the first had used got the
    // first one's stored response (or, for another body, 422), its own request never running (as on Redis before its
    // prefix took the application name).
    [Fact]
    public async Task TwoApplicationsOnOneDatabase_UsingTheSameKey_EachRunItsOwnRequest_WhileAnInstanceOfTheSameApplicationReplays()
    {
        await using (var billing = await StartAsync("billing"))
        {
            var first = await billing.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"s-2","quantity":1}""", "shared-key"));
            Assert.Equal(HttpStatusCode.Accepted, first.StatusCode);
        }

        await using (var shipping = await StartAsync("shipping"))
        {
            // Its own order (the applications share the event store too): under billing's key it was refused with 422.
            var other = await shipping.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"s-3","quantity":1}""", "shared-key"));

            Assert.Equal(HttpStatusCode.Accepted, other.StatusCode);
            Assert.Equal("/orders/s-3", other.Headers.Location?.OriginalString);
            Assert.False(other.Headers.Contains("Idempotency-Replayed"), "another application's response was replayed");
            Assert.Equal(1, shipping.Services.GetRequiredService<Observed>().Runs);
        }

        await using var billingAgain = await StartAsync("billing");
        var replay = await billingAgain.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"s-2","quantity":1}""", "shared-key"));
        Assert.Equal("true", Assert.Single(replay.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal(0, billingAgain.Services.GetRequiredService<Observed>().Runs);
    }
}
