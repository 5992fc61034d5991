using System.Net;
using System.Text;
using Herald.Cqrs;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.AspNetCore.Tests;

/// <summary>The same glue on a real Kestrel on 127.0.0.1: its pipe-based response body and its own request size limit.</summary>
public sealed class KestrelTests
{
    private sealed class ChunkedContent(byte[] bytes) : HttpContent
    {
        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => stream.WriteAsync(bytes).AsTask();

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    private static Task<TestApp> StartAsync(Action<IServiceCollection>? services = null) => TestApp.StartAsync(
        app => app.MapPost("/orders", async (PlaceOrder command, HttpContext http, ICommandBus bus, Observed observed, CancellationToken ct) =>
        {
            observed.Run();
            await bus.SendAsync(command, http.GetEventMetadata(), ct);
            return Results.Accepted($"/orders/{command.OrderId}", new { command.OrderId, at = Guid.CreateVersion7() });
        }).AcceptsJson<PlaceOrder>(maxBodyBytes: 1000).WithIdempotencyKey(),
        services: services,
        kestrel: true);

    [Fact]
    public async Task OnKestrel_SameKeyIsReplayedByteForByte_AndRunsOnce()
    {
        await using var app = await StartAsync();

        var first = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"k-1","quantity":1}""", "kestrel-1", "flow-k"));
        var second = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"k-1","quantity":1}""", "kestrel-1"));

        Assert.Equal(HttpStatusCode.Accepted, first.StatusCode);
        Assert.Equal("flow-k", Assert.Single(first.Headers.GetValues("X-Correlation-Id")));
        Assert.Equal("true", Assert.Single(second.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal(first.Headers.Location, second.Headers.Location);
        Assert.Equal(await first.Content.ReadAsByteArrayAsync(), await second.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task OnKestrel_OversizedBodies_Answer413_WithOrWithoutAContentLength()
    {
        await using var app = await StartAsync();

        await AssertRefusedAs413Async(app, Encoding.UTF8.GetBytes($$"""{"orderId":"{{new string('x', 2000)}}","quantity":1}"""));
    }

    /// <summary>
    /// The guard set the server's body limit to its own, raising a stricter one the application gave Kestrel: a body the
    /// server refuses everywhere else was read and run on every guarded endpoint.
    /// </summary>
    [Fact]
    public async Task OnKestrel_AStricterServerLimit_IsKeptByTheGuard_WithOrWithoutAContentLength()
    {
        await using var app = await StartAsync(s => s.Configure<Microsoft.AspNetCore.Server.Kestrel.Core.KestrelServerOptions>(o => o.Limits.MaxRequestBodySize = 100));

        // 300 bytes, within the endpoint's 1000 but over the server's 100.
        await AssertRefusedAs413Async(app, Encoding.UTF8.GetBytes("""{"orderId":"k-3","quantity":1}""" + new string(' ', 270)));
    }

    /// <summary>Posts the JSON body with a Content-Length and chunked: both are answered a 413 problem and neither runs.</summary>
    private static async Task AssertRefusedAs413Async(TestApp app, byte[] body)
    {
        var sized = new ByteArrayContent(body);
        sized.Headers.ContentType = new("application/json");
        var chunked = new ChunkedContent(body);
        chunked.Headers.ContentType = new("application/json");

        var withLength = await app.Client.PostAsync("/orders", sized);
        var withoutLength = await app.Client.PostAsync("/orders", chunked);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, withLength.StatusCode);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, withoutLength.StatusCode);
        Assert.Equal(413, (await withLength.ProblemAsync()).GetProperty("status").GetInt32());
        Assert.Equal(413, (await withoutLength.ProblemAsync()).GetProperty("status").GetInt32());
        Assert.Equal(0, app.Services.GetRequiredService<Observed>().Runs);
    }
}
