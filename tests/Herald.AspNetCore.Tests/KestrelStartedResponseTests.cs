using System.Net;
using System.Runtime.CompilerServices;
using System.Text;
using Herald.Reliability.Idempotency;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.AspNetCore.Tests;

/// <summary>
/// Idempotency-Key endpoints on a real Kestrel on 127.0.0.1 whose handlers start the response themselves: <c>StartAsync</c>,
/// a flush, <c>CompleteAsync</c>, writes through <c>BodyWriter</c>, <c>Results.Stream</c>, server-sent events. The response is
/// still stored before any of it reaches the client, and replayed byte for byte; one larger than what is kept streams, and
/// frees its key.
/// </summary>
public sealed class KestrelStartedResponseTests
{
    private const int MaxStored = 16 * 1024;

    private static Task<TestApp> StartAsync() => TestApp.StartAsync(
        app =>
        {
            app.MapPost("/started", async (HttpContext http, Observed observed) =>
            {
                var run = observed.Run();
                http.Response.StatusCode = StatusCodes.Status201Created;
                http.Response.ContentType = "text/plain";
                http.Response.Headers.Location = "/things/1";
                await http.Response.StartAsync();
                await http.Response.WriteAsync($"started:{run}");
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/flushed", async (HttpContext http, Observed observed) =>
            {
                var run = observed.Run();
                http.Response.ContentType = "text/plain";
                await http.Response.Body.WriteAsync("part1;"u8.ToArray());
                await http.Response.Body.FlushAsync();
                await http.Response.Body.WriteAsync(Encoding.UTF8.GetBytes($"part2:{run}"));
                await http.Response.Body.FlushAsync();
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/completed", async (HttpContext http, Observed observed) =>
            {
                var run = observed.Run();
                http.Response.ContentType = "text/plain";
                await http.Response.WriteAsync($"completed:{run}");
                await http.Response.CompleteAsync();
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/pipe", async (HttpContext http, Observed observed) =>
            {
                var run = observed.Run();
                http.Response.ContentType = "text/plain";
                var writer = http.Response.BodyWriter;
                var written = Encoding.UTF8.GetBytes("pipe:", writer.GetSpan(16));
                writer.Advance(written);
                await writer.FlushAsync();
                await writer.WriteAsync(Encoding.UTF8.GetBytes(run.ToString(System.Globalization.CultureInfo.InvariantCulture)));
                // Advanced but never flushed: the server flushes it when the endpoint returns.
                writer.GetSpan(1)[0] = (byte)'!';
                writer.Advance(1);
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/pipe-completed", async (HttpContext http, Observed observed) =>
            {
                var run = observed.Run();
                http.Response.ContentType = "text/plain";
                await http.Response.StartAsync();
                await http.Response.BodyWriter.WriteAsync(Encoding.UTF8.GetBytes($"pipe-completed:{run}"));
                await http.Response.BodyWriter.CompleteAsync();
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/stream", (Observed observed) =>
            {
                var run = observed.Run();
                return Results.Stream(
                    async body =>
                    {
                        await body.WriteAsync("stream;"u8.ToArray());
                        await body.FlushAsync();
                        await body.WriteAsync(Encoding.UTF8.GetBytes($"run:{run}"));
                    },
                    "text/plain");
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/stream-of", (Observed observed) =>
            {
                var run = observed.Run();
                return Results.Stream(new MemoryStream(Encoding.UTF8.GetBytes($"stream-of:{run}")), "application/octet-stream");
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/sse", (Observed observed) => TypedResults.ServerSentEvents(Events(observed.Run())))
                .WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/started-large", async (HttpContext http, Observed observed) =>
            {
                var run = observed.Run();
                http.Response.ContentType = "application/octet-stream";
                http.Response.OnStarting(() =>
                {
                    http.Response.Headers.ETag = "\"large\"";
                    return Task.CompletedTask;
                });
                await http.Response.StartAsync();
                await http.Response.BodyWriter.WriteAsync(new byte[MaxStored]);
                await http.Response.BodyWriter.WriteAsync(new[] { (byte)run });
                await http.Response.CompleteAsync();
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/on-starting", async (HttpContext http, Observed observed) =>
            {
                var run = observed.Run();
                http.Response.ContentType = "text/plain";
                // Headers set as the response starts: what a validator or cache header computed late looks like.
                http.Response.OnStarting(() =>
                {
                    http.Response.Headers.ETag = $"\"v{run}\"";
                    http.Response.Headers.CacheControl = "private, max-age=60";
                    return Task.CompletedTask;
                });
                await http.Response.StartAsync();
                await http.Response.WriteAsync($"on-starting:{run}");
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/started-then-throws", async (HttpContext http, Observed observed) =>
            {
                var run = observed.Run();
                http.Response.ContentType = "text/plain";
                await http.Response.StartAsync();
                await http.Response.WriteAsync("half");
                await http.Response.Body.FlushAsync();
                if (run == 1)
                {
                    throw new InvalidOperationException("failed after starting");
                }

                await http.Response.WriteAsync($":{run}");
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/streamed-then-throws", async (HttpContext http, Observed observed) =>
            {
                var run = observed.Run();
                http.Response.ContentType = "application/octet-stream";
                await http.Response.BodyWriter.WriteAsync(new byte[MaxStored + 1]);
                if (run == 1)
                {
                    throw new InvalidOperationException("failed mid-stream");
                }
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
        },
        services: s => s.AddSingleton<SignallingStore>().AddSingleton<IIdempotencyStore>(p => p.GetRequiredService<SignallingStore>()),
        kestrel: true);

    private static async IAsyncEnumerable<string> Events(int run, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        yield return "a";
        await Task.Yield();
        yield return "b";
        cancellationToken.ThrowIfCancellationRequested();
        yield return $"run {run}";
    }

    private static HttpRequestMessage Post(string path, string key) => Http.Json(HttpMethod.Post, path, """{"n":1}""", key);

    [Theory]
    [InlineData("/started", HttpStatusCode.Created, "text/plain", "started:1")]
    [InlineData("/flushed", HttpStatusCode.OK, "text/plain", "part1;part2:1")]
    [InlineData("/completed", HttpStatusCode.OK, "text/plain", "completed:1")]
    [InlineData("/pipe", HttpStatusCode.OK, "text/plain", "pipe:1!")]
    [InlineData("/pipe-completed", HttpStatusCode.OK, "text/plain", "pipe-completed:1")]
    [InlineData("/stream", HttpStatusCode.OK, "text/plain", "stream;run:1")]
    [InlineData("/stream-of", HttpStatusCode.OK, "application/octet-stream", "stream-of:1")]
    [InlineData("/sse", HttpStatusCode.OK, "text/event-stream", "data: a\n\ndata: b\n\ndata: run 1\n\n")]
    public async Task HandlerThatStartsTheResponse_IsStoredBeforeItIsSent_AndReplayedByteForByte(string path, HttpStatusCode status, string mediaType, string body)
    {
        await using var app = await StartAsync();
        var store = app.Services.GetRequiredService<SignallingStore>();

        using var first = await app.Client.SendAsync(Post(path, "started-1"), HttpCompletionOption.ResponseHeadersRead).WaitAsync(TimeSpan.FromSeconds(10));
        // The client saw the status only after the response was stored, however early the endpoint started it.
        Assert.True(store.Completed.Task.IsCompleted, "the response reached the client before it was stored");
        Assert.Equal(status, first.StatusCode);
        Assert.Equal(mediaType, first.Content.Headers.ContentType?.MediaType);
        var firstBody = await first.Content.ReadAsByteArrayAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(body, Encoding.UTF8.GetString(firstBody));

        using var replay = await app.Client.SendAsync(Post(path, "started-1")).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(status, replay.StatusCode);
        Assert.Equal("true", Assert.Single(replay.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal(first.Content.Headers.ContentType?.ToString(), replay.Content.Headers.ContentType?.ToString());
        Assert.Equal(first.Headers.Location, replay.Headers.Location);
        Assert.Equal(first.Headers.CacheControl?.ToString(), replay.Headers.CacheControl?.ToString());
        Assert.Equal(firstBody, await replay.Content.ReadAsByteArrayAsync().WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
        Assert.False(store.Released.Task.IsCompleted);
    }

    [Fact]
    public async Task StartedResponseLargerThanWhatIsKept_ReachesTheClientWhole_AndFreesItsKey_SoItsRetryRuns()
    {
        await using var app = await StartAsync();
        var store = app.Services.GetRequiredService<SignallingStore>();

        using var first = await app.Client.SendAsync(Post("/started-large", "large-1")).WaitAsync(TimeSpan.FromSeconds(10));
        var firstBody = await first.Content.ReadAsByteArrayAsync();
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal(MaxStored + 1, firstBody.Length);
        Assert.Equal(1, firstBody[^1]);
        // Its OnStarting callback ran before the first byte was sent on, as without the key.
        Assert.Equal("\"large\"", first.Headers.ETag?.ToString());
        await store.Released.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(store.Completed.Task.IsCompleted);

        using var retry = await app.Client.SendAsync(Post("/started-large", "large-1")).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(HttpStatusCode.OK, retry.StatusCode);
        Assert.False(retry.Headers.Contains("Idempotency-Replayed"));
        var retryBody = await retry.Content.ReadAsByteArrayAsync();
        Assert.Equal(MaxStored + 1, retryBody.Length);
        Assert.Equal(2, retryBody[^1]);
        Assert.Equal(2, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task HeadersSetAsTheResponseStarts_AreReplayedAsTheFirstClientGotThem()
    {
        await using var app = await StartAsync();

        using var first = await app.Client.SendAsync(Post("/on-starting", "on-starting-1")).WaitAsync(TimeSpan.FromSeconds(10));
        using var replay = await app.Client.SendAsync(Post("/on-starting", "on-starting-1")).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal("\"v1\"", first.Headers.ETag?.ToString());
        Assert.Equal("true", Assert.Single(replay.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal(await first.Content.ReadAsStringAsync(), await replay.Content.ReadAsStringAsync());
        Assert.Equal(first.Headers.ETag?.ToString(), replay.Headers.ETag?.ToString());
        Assert.Equal(first.Headers.CacheControl?.ToString(), replay.Headers.CacheControl?.ToString());
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task StartedResponseThatThrows_IsAnswered500NotHalfABody_AndFreesItsKey()
    {
        await using var app = await StartAsync();
        var store = app.Services.GetRequiredService<SignallingStore>();

        using var first = await app.Client.SendAsync(Post("/started-then-throws", "throws-1")).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(HttpStatusCode.InternalServerError, first.StatusCode);
        Assert.DoesNotContain("half", await first.Content.ReadAsStringAsync());
        await store.Released.Task.WaitAsync(TimeSpan.FromSeconds(10));

        using var retry = await app.Client.SendAsync(Post("/started-then-throws", "throws-1")).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(HttpStatusCode.OK, retry.StatusCode);
        Assert.Equal("half:2", await retry.Content.ReadAsStringAsync());
        Assert.False(retry.Headers.Contains("Idempotency-Replayed"));
    }

    [Fact]
    public async Task StreamedResponseThatThrows_FailsItsClient_AndFreesItsKey_SoItsRetryRuns()
    {
        await using var app = await StartAsync();
        var store = app.Services.GetRequiredService<SignallingStore>();

        // Already streaming when it throws: the server can only abort it, and the client sees a broken response.
        await Assert.ThrowsAnyAsync<HttpRequestException>(async () =>
        {
            using var first = await app.Client.SendAsync(Post("/streamed-then-throws", "stream-throws-1")).WaitAsync(TimeSpan.FromSeconds(10));
        });
        await store.Released.Task.WaitAsync(TimeSpan.FromSeconds(10));

        using var retry = await app.Client.SendAsync(Post("/streamed-then-throws", "stream-throws-1")).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(HttpStatusCode.OK, retry.StatusCode);
        Assert.Equal(MaxStored + 1, (await retry.Content.ReadAsByteArrayAsync()).Length);
        Assert.Equal(2, app.Services.GetRequiredService<Observed>().Runs);
    }

    /// <summary>The in-memory store, telling when a response was stored and when a key was released.</summary>
    private sealed class SignallingStore : IIdempotencyStore
    {
        private readonly InMemoryIdempotencyStore _inner = new(TimeProvider.System);

        public TaskCompletionSource Completed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Released { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default) => _inner.TryAcquireAsync(key, lockTtl, cancellationToken);

        public async ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default)
        {
            var completed = await _inner.CompleteAsync(key, lockToken, result, ttl, cancellationToken);
            Completed.TrySetResult();
            return completed;
        }

        public async ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default)
        {
            var released = await _inner.ReleaseAsync(key, lockToken, cancellationToken);
            Released.TrySetResult();
            return released;
        }

        public ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default) => _inner.RenewAsync(key, lockToken, lockTtl, cancellationToken);
    }
}
