using System.Net;
using Herald.Reliability.Idempotency;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.AspNetCore.Tests;

/// <summary>Idempotency-Key endpoints on a real Kestrel on 127.0.0.1: large and streamed responses, clients that go away.</summary>
public sealed class KestrelIdempotencyTests
{
    private const int MaxStored = 64 * 1024;

    private sealed class Gate
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Open { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource<bool> Cancelled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private static Task<TestApp> StartAsync() => TestApp.StartAsync(
        app =>
        {
            app.MapPost("/export", async (HttpContext http, Observed observed, Gate gate) =>
            {
                // A large export: more than is kept for replay, written and flushed before the rest is ready.
                observed.Run();
                http.Response.ContentType = "text/plain";
                await http.Response.Body.WriteAsync(new byte[MaxStored + 1].AsMemory());
                await http.Response.Body.FlushAsync();
                gate.Entered.TrySetResult();
                await gate.Open.Task;
                await http.Response.Body.WriteAsync("end"u8.ToArray());
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/exact", async (HttpContext http, Observed observed) =>
            {
                // Exactly as much as is kept, in two writes.
                observed.Run();
                http.Response.ContentType = "application/octet-stream";
                var body = Enumerable.Range(0, MaxStored).Select(i => (byte)i).ToArray();
                await http.Response.Body.WriteAsync(body.AsMemory(0, 1000));
                await http.Response.Body.WriteAsync(body.AsMemory(1000));
            }).WithIdempotencyKey(o => o.MaxStoredResponseBytes = MaxStored);
            app.MapPost("/slow", async (HttpContext http, Observed observed, Gate gate, CancellationToken ct) =>
            {
                var run = observed.Run();
                if (run == 1)
                {
                    gate.Entered.TrySetResult();
                    try
                    {
                        await Task.Delay(Timeout.Infinite, ct);
                    }
                    catch (OperationCanceledException)
                    {
                        gate.Cancelled.TrySetResult(true);
                        throw;
                    }
                }

                return Results.Ok(new { run });
            }).WithIdempotencyKey();
            app.MapPost("/report", async (HttpContext http, Observed observed) =>
            {
                // A compressed download: its representation headers say how to read the bytes and how to cache them.
                observed.Run();
                var headers = http.Response.Headers;
                http.Response.ContentType = "text/csv";
                headers.ContentEncoding = "gzip";
                headers.ContentDisposition = "attachment; filename=\"report.csv\"";
                headers.ContentLanguage = "en";
                headers.ETag = "\"v1\"";
                headers.LastModified = "Tue, 01 Dec 2026 10:00:00 GMT";
                headers.CacheControl = "private, max-age=60";
                headers.SetCookie = "session=first";
                headers["X-Run"] = "1";
                await http.Response.Body.WriteAsync(Gzip("id,total\n1,42\n"));
            }).WithIdempotencyKey();
        },
        services: s => s.AddSingleton<Gate>().AddSingleton<ReleaseSignallingStore>().AddSingleton<IIdempotencyStore>(p => p.GetRequiredService<ReleaseSignallingStore>()),
        kestrel: true);

    private static HttpRequestMessage Post(string path, string key)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent("{}", System.Text.Encoding.UTF8, "application/json") };
        request.Headers.Add("Idempotency-Key", key);
        return request;
    }

    /// <summary>
    /// A response larger than what is kept for replay was held whole in memory until the endpoint finished: an export of
    /// gigabytes took as much memory per request, and its client saw nothing (not even the status) until the end.
    /// </summary>
    [Fact]
    public async Task ResponseLargerThanWhatIsKept_IsStreamedAsItIsWritten_AndItsKeyFreed()
    {
        await using var app = await StartAsync();
        var gate = app.Services.GetRequiredService<Gate>();
        try
        {
            var sent = app.Client.SendAsync(Post("/export", "big-1"), HttpCompletionOption.ResponseHeadersRead);
            await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(10));

            // The endpoint still runs: its first bytes (and the status) have reached the client all the same.
            using var response = await sent.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            await using var body = await response.Content.ReadAsStreamAsync();
            var first = new byte[MaxStored + 1];
            await body.ReadExactlyAsync(first).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            gate.Open.SetResult();
            using var rest = new MemoryStream();
            await body.CopyToAsync(rest).WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal("end"u8.ToArray(), rest.ToArray());
        }
        finally
        {
            gate.Open.TrySetResult();
        }

        // Not kept: a retry runs the endpoint again (as documented), rather than find the key locked or replay half a body.
        gate.Entered.TrySetResult();
        var retry = await app.Client.SendAsync(Post("/export", "big-1"));
        Assert.Equal(HttpStatusCode.OK, retry.StatusCode);
        Assert.False(retry.Headers.Contains("Idempotency-Replayed"));
        Assert.Equal(MaxStored + 1 + 3, (await retry.Content.ReadAsByteArrayAsync()).Length);
        Assert.Equal(2, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task ResponseOfExactlyWhatIsKept_IsStoredAndReplayedByteForByte()
    {
        await using var app = await StartAsync();

        var first = await app.Client.SendAsync(Post("/exact", "exact-1"));
        var replay = await app.Client.SendAsync(Post("/exact", "exact-1"));

        Assert.Equal(Enumerable.Range(0, MaxStored).Select(i => (byte)i).ToArray(), await first.Content.ReadAsByteArrayAsync());
        Assert.Equal("true", Assert.Single(replay.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal("application/octet-stream", replay.Content.Headers.ContentType?.MediaType);
        Assert.Equal(await first.Content.ReadAsByteArrayAsync(), await replay.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task ClientThatGoesAwayMidRequest_CancelsTheEndpoint_AndFreesTheKey_SoItsRetryRuns()
    {
        await using var app = await StartAsync();
        var gate = app.Services.GetRequiredService<Gate>();
        using (var abort = new CancellationTokenSource())
        {
            var sent = app.Client.SendAsync(Post("/slow", "gone-1"), abort.Token);
            await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(10));
            abort.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sent);
        }

        Assert.True(await gate.Cancelled.Task.WaitAsync(TimeSpan.FromSeconds(10)));
        await app.Services.GetRequiredService<ReleaseSignallingStore>().Released.Task.WaitAsync(TimeSpan.FromSeconds(10));

        var retry = await app.Client.SendAsync(Post("/slow", "gone-1"));

        Assert.Equal(HttpStatusCode.OK, retry.StatusCode);
        Assert.Equal("""{"run":2}""", await retry.Content.ReadAsStringAsync());
    }

    /// <summary>
    /// A replay restored only <c>Content-Type</c> and <c>Location</c>: a gzip body came back without its
    /// <c>Content-Encoding</c> (corrupt to the client), and its file name, language and validators were lost.
    /// </summary>
    [Fact]
    public async Task Replay_RestoresTheRepresentationHeaders_ButNotCookiesOrOtherHeaders()
    {
        await using var app = await StartAsync();

        var first = await app.Client.SendAsync(Post("/report", "report-1"));
        var replay = await app.Client.SendAsync(Post("/report", "report-1"));

        Assert.Equal("true", Assert.Single(replay.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
        Assert.Equal(await first.Content.ReadAsByteArrayAsync(), await replay.Content.ReadAsByteArrayAsync());
        Assert.Equal("id,total\n1,42\n", Gunzip(await replay.Content.ReadAsByteArrayAsync()));
        foreach (var name in new[] { "Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language", "ETag", "Last-Modified", "Cache-Control" })
        {
            Assert.Equal(Header(first, name), Header(replay, name));
            Assert.NotNull(Header(replay, name));
        }

        // Not the response's representation: a cookie is the first client's, and other headers are the endpoint's business.
        Assert.Null(Header(replay, "Set-Cookie"));
        Assert.Null(Header(replay, "X-Run"));
    }

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) || response.Content.Headers.TryGetValues(name, out values) ? string.Join(", ", values) : null;

    private static byte[] Gzip(string text)
    {
        using var compressed = new MemoryStream();
        using (var gzip = new System.IO.Compression.GZipStream(compressed, System.IO.Compression.CompressionLevel.Fastest))
        {
            gzip.Write(System.Text.Encoding.UTF8.GetBytes(text));
        }

        return compressed.ToArray();
    }

    private static string Gunzip(byte[] bytes)
    {
        using var gzip = new System.IO.Compression.GZipStream(new MemoryStream(bytes), System.IO.Compression.CompressionMode.Decompress);
        using var reader = new StreamReader(gzip);
        return reader.ReadToEnd();
    }

    /// <summary>The in-memory store, telling when a key was released.</summary>
    private sealed class ReleaseSignallingStore : IIdempotencyStore
    {
        private readonly InMemoryIdempotencyStore _inner = new(TimeProvider.System);

        public TaskCompletionSource Released { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default) => _inner.TryAcquireAsync(key, lockTtl, cancellationToken);

        public ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default) =>
            _inner.CompleteAsync(key, lockToken, result, ttl, cancellationToken);

        public async ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default)
        {
            var released = await _inner.ReleaseAsync(key, lockToken, cancellationToken);
            Released.TrySetResult();
            return released;
        }

        public ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default) => _inner.RenewAsync(key, lockToken, lockTtl, cancellationToken);
    }
}
