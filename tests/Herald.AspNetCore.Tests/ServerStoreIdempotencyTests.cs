using System.Net;
using Herald.Reliability.Idempotency;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.AspNetCore.Tests;

/// <summary>Idempotency-Key endpoints on Kestrel with the idempotency store on a real server: Redis and PostgreSQL.</summary>
public sealed class ServerStoreIdempotencyTests : IAsyncLifetime
{
    private readonly string _schema = TestServers.NewSchema("http_idem_");
    private readonly string _run = Guid.NewGuid().ToString("N");

    private sealed class Gate
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Open { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => TestServers.DropSchemaAsync(_schema);

    private Task<TestApp> StartAsync(string server) => TestApp.StartAsync(
        app =>
        {
            app.MapPost("/big", async (HttpContext http, Observed observed) =>
            {
                // Near the 1 MiB kept by default: every byte value, with a Location to replay.
                var run = observed.Run();
                http.Response.StatusCode = StatusCodes.Status201Created;
                http.Response.Headers.Location = "/things/" + run;
                http.Response.ContentType = "application/octet-stream";
                await http.Response.Body.WriteAsync(Enumerable.Range(0, 1000 * 1024).Select(i => (byte)(i * 7)).ToArray());
            }).WithIdempotencyKey();
            app.MapPost("/gated", async (Observed observed, Gate gate) =>
            {
                var run = observed.Run();
                gate.Entered.TrySetResult();
                await gate.Open.Task;
                return run == 1 ? Results.StatusCode(StatusCodes.Status503ServiceUnavailable) : Results.Ok(new { run });
            }).WithIdempotencyKey(o => o.RetryAfter = TimeSpan.FromSeconds(2));
        },
        h =>
        {
            if (server == "redis")
            {
                h.UseRedis(TestServers.Redis, o => o.KeyPrefix = $"herald-http-test:{_run}:");
            }
            else
            {
                h.UsePostgres(TestServers.Postgres, o => o.Schema = _schema);
            }
        },
        s => s.AddSingleton<Gate>(),
        kestrel: true);

    private HttpRequestMessage Post(string path, string key, string body = "{}")
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, System.Text.Encoding.UTF8, "application/json") };
        request.Headers.Add("Idempotency-Key", _run + key);
        return request;
    }

    [Theory]
    [InlineData("redis")]
    [InlineData("postgres")]
    public async Task LargeResponse_IsReplayedWithItsStatusLocationTypeAndBytes_AndAnotherBodyIs422(string server)
    {
        await using var app = await StartAsync(server);
        Assert.Equal(server == "redis" ? "RedisIdempotencyStore" : "PostgresIdempotencyStore", app.Services.GetRequiredService<IIdempotencyStore>().GetType().Name);

        var first = await app.Client.SendAsync(Post("/big", "big"));
        var replay = await app.Client.SendAsync(Post("/big", "big"));
        var other = await app.Client.SendAsync(Post("/big", "big", """{"other":true}"""));

        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        Assert.Equal(HttpStatusCode.Created, replay.StatusCode);
        Assert.Equal("true", Assert.Single(replay.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal("/things/1", replay.Headers.Location?.OriginalString);
        Assert.Equal("application/octet-stream", replay.Content.Headers.ContentType?.MediaType);
        Assert.Equal(await first.Content.ReadAsByteArrayAsync(), await replay.Content.ReadAsByteArrayAsync());
        Assert.Equal(HttpStatusCode.UnprocessableEntity, other.StatusCode);
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Theory]
    [InlineData("redis")]
    [InlineData("postgres")]
    public async Task RetryWhileTheFirstRuns_Is409WithRetryAfter_AndAFirst5xxFreesTheKey(string server)
    {
        await using var app = await StartAsync(server);
        var gate = app.Services.GetRequiredService<Gate>();
        var first = app.Client.SendAsync(Post("/gated", "gated"));
        await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(10));

        var during = await app.Client.SendAsync(Post("/gated", "gated"));
        gate.Open.SetResult();
        var failed = await first.WaitAsync(TimeSpan.FromSeconds(10));
        var retried = await app.Client.SendAsync(Post("/gated", "gated"));
        var replayed = await app.Client.SendAsync(Post("/gated", "gated"));

        Assert.Equal(HttpStatusCode.Conflict, during.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(2), during.Headers.RetryAfter?.Delta);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, failed.StatusCode);
        Assert.Equal(HttpStatusCode.OK, retried.StatusCode);
        Assert.Equal("""{"run":2}""", await retried.Content.ReadAsStringAsync());
        Assert.Equal("""{"run":2}""", await replayed.Content.ReadAsStringAsync());
        Assert.True(replayed.Headers.Contains("Idempotency-Replayed"));
        Assert.Equal(2, app.Services.GetRequiredService<Observed>().Runs);
    }
}
