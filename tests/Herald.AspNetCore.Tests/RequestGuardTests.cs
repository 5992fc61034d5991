using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Herald.AspNetCore.Tests;

public sealed class RequestGuardTests
{
    /// <summary>A body sent without a Content-Length (chunked), so only counting it can find it too long.</summary>
    private sealed class ChunkedContent(string text) : HttpContent
    {
        private readonly byte[] _bytes = Encoding.UTF8.GetBytes(text);

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => stream.WriteAsync(_bytes).AsTask();

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    private static Task<TestApp> StartAsync() => TestApp.StartAsync(
        app =>
        {
            app.MapPost("/small", (PlaceOrder command) => Results.Ok(command)).AcceptsJson<PlaceOrder>(maxBodyBytes: 100);
            app.MapPost("/default", (PlaceOrder command) => Results.Ok(command)).AcceptsJson<PlaceOrder>();
            app.MapPost("/raw", async (HttpRequest request) => Results.Ok(new { length = (await new StreamReader(request.Body).ReadToEndAsync()).Length }))
                .RequireJsonBody(maxBodyBytes: 100);
            app.MapPost("/large", (PlaceOrder command) => Results.Ok(command)).AcceptsJson<PlaceOrder>(maxBodyBytes: 1000).WithIdempotencyKey();
            var group = app.MapGroup("/group").RequireJsonBody(maxBodyBytes: 50);
            group.MapPost("/raw", async (HttpRequest request) => Results.Ok(new { length = (await new StreamReader(request.Body).ReadToEndAsync()).Length }));
        },
        http: o => o.MaxRequestBodyBytes = 200);

    private static StringContent Json(int padding) =>
        new($$"""{"orderId":"{{new string('x', padding)}}","quantity":1}""", Encoding.UTF8, "application/json");

    // A small order as UTF-8 bytes, sent with this Content-Type as it is (HttpClient would not pass every form).
    private static ByteArrayContent OrderIn(string contentType)
    {
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes("""{"orderId":"a","quantity":1}"""));
        content.Headers.TryAddWithoutValidation("Content-Type", contentType);
        return content;
    }

    [Fact]
    public async Task BodyWithinTheLimit_IsBoundAsUsual()
    {
        await using var app = await StartAsync();

        var response = await app.Client.PostAsync("/small", Json(10));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(new string('x', 10), (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("orderId").GetString());
    }

    [Fact]
    public async Task BodyOverTheEndpointsLimit_Answers413_WithTheLimit()
    {
        await using var app = await StartAsync();

        var response = await app.Client.PostAsync("/small", Json(150));

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Contains("100 bytes", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ChunkedBodyOverTheLimit_Answers413_ByCountingIt()
    {
        await using var app = await StartAsync();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/raw") { Content = new ChunkedContent(new string('x', 150)) };
        request.Content.Headers.ContentType = new("application/json");

        var response = await app.Client.SendAsync(request);

        Assert.Null(request.Content.Headers.ContentLength);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
    }

    [Fact]
    public async Task ChunkedBodyWithinTheLimit_IsReadWholeByTheEndpoint()
    {
        await using var app = await StartAsync();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/raw") { Content = new ChunkedContent(new string('x', 90)) };
        request.Content.Headers.ContentType = new("application/json");

        var response = await app.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(90, (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("length").GetInt32());
    }

    [Fact]
    public async Task WithoutAnEndpointLimit_TheOptionsLimitApplies()
    {
        await using var app = await StartAsync();

        var within = await app.Client.PostAsync("/default", Json(150));
        var over = await app.Client.PostAsync("/default", Json(250));

        Assert.Equal(HttpStatusCode.OK, within.StatusCode);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, over.StatusCode);
        Assert.Contains("200 bytes", (await over.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task EndpointLimitAboveTheOptionsLimit_AlsoBoundsTheIdempotencyKeysBodyHash()
    {
        await using var app = await StartAsync();
        var request = new HttpRequestMessage(HttpMethod.Post, "/large") { Content = Json(500) };
        request.Headers.Add("Idempotency-Key", "large-1");

        var response = await app.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Theory]
    [InlineData("/small")]
    [InlineData("/raw")]
    public async Task NonJsonBody_Answers415_SayingWhatWasSent(string path)
    {
        await using var app = await StartAsync();

        var response = await app.Client.PostAsync(path, new StringContent("<order/>", Encoding.UTF8, "application/xml"));

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Contains("application/xml", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("application/json; charset=bogus", "bogus")]
    [InlineData("application/json; charset=utf-7", "utf-7")]
    [InlineData("application/json; charset=\"\"", "charset")]
    public async Task JsonBodyInACharsetThatCannotBeRead_Answers415_NotA500(string contentType, string named)
    {
        await using var app = await StartAsync();
        var content = OrderIn(contentType);

        var response = await app.Client.PostAsync("/small", content);

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Contains(named, (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task JsonBodyInAKnownCharset_IsBoundAsUsual()
    {
        await using var app = await StartAsync();
        var content = new ByteArrayContent(Encoding.Latin1.GetBytes("""{"orderId":"a","quantity":1}"""));
        content.Headers.TryAddWithoutValidation("Content-Type", "application/json; charset=iso-8859-1");

        var response = await app.Client.PostAsync("/small", content);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    // RFC 9110 8.3.1: a quoted charset equals the unquoted one, and charset names are case-insensitive.
    [Theory]
    [InlineData("/small", "application/json; charset=\"utf-8\"")]
    [InlineData("/small", "application/json; charset=\"UTF-8\"")]
    [InlineData("/small", "application/json; charset=UTF-8")]
    [InlineData("/raw", "application/json; charset=\"utf-8\"")]
    [InlineData("/small", "application/json; charset=\"iso-8859-1\"")]
    public async Task JsonBodyInUtf8WithAQuotedOrUpperCaseCharset_IsAccepted(string path, string contentType)
    {
        await using var app = await StartAsync();
        var content = OrderIn(contentType);

        var response = await app.Client.PostAsync(path, content);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task BodyWithoutAContentType_Answers415()
    {
        await using var app = await StartAsync();
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes("""{"orderId":"a","quantity":1}"""));

        var response = await app.Client.PostAsync("/raw", content);

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Contains("no Content-Type", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task GroupGuard_AppliesToEveryEndpointOfTheGroup()
    {
        await using var app = await StartAsync();

        var over = await app.Client.PostAsync("/group/raw", Json(60));
        var wrong = await app.Client.PostAsync("/group/raw", new StringContent("x", Encoding.UTF8, "text/plain"));

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, over.StatusCode);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, wrong.StatusCode);
    }
}
