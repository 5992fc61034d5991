using System.Net;
using System.Security.Claims;
using System.Text;
using Herald.Cqrs;
using Herald.EventSourcing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace Herald.AspNetCore.Tests;

public sealed class IdempotencyKeyTests
{
    /// <summary>Lets a test hold the endpoint inside its handler (the key's lock held) until it opens the gate.</summary>
    private sealed class Gate
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Open { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private static Task<TestApp> StartAsync(Action<IdempotencyKeyOptions>? configure = null, Action<IServiceCollection>? services = null, Action<Herald.Hosting.HeraldBuilder>? herald = null) =>
        TestApp.StartAsync(
            app =>
            {
                app.Use((context, next) =>
                {
                    if (context.Request.Headers.TryGetValue("X-Test-User", out var user))
                    {
                        context.User = new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.Name, user.ToString())], "test"));
                    }

                    return next(context);
                });
                app.MapPost("/orders", async (PlaceOrder command, HttpContext http, ICommandBus bus, Observed observed, CancellationToken ct) =>
                {
                    var run = observed.Run();
                    await bus.SendAsync(command, http.GetEventMetadata(), ct);
                    return Results.Accepted($"/orders/{command.OrderId}", new { command.OrderId, run, correlationId = http.GetCorrelationId() });
                }).AcceptsJson<PlaceOrder>().WithIdempotencyKey(configure);
                app.MapPost("/gated", async (PlaceOrder command, Observed observed, Gate gate) =>
                {
                    observed.Run();
                    gate.Entered.TrySetResult();
                    await gate.Open.Task;
                    return Results.Created($"/orders/{command.OrderId}", new { command.OrderId });
                }).WithIdempotencyKey(configure);
                app.MapPost("/flaky", (PlaceOrder command, Observed observed) =>
                {
                    var run = observed.Run();
                    return run switch
                    {
                        1 => throw new InvalidOperationException("the database went away"),
                        2 => Results.StatusCode(StatusCodes.Status503ServiceUnavailable),
                        _ => Results.Ok(new { command.OrderId, run }),
                    };
                }).WithIdempotencyKey(configure);
                var group = app.MapGroup("/group").WithIdempotencyKey(configure);
                group.MapPost("/items/{id}", (string id, Observed observed) => Results.Ok(new { id, run = observed.Run() }));
            },
            herald,
            s =>
            {
                s.AddSingleton<Gate>();
                services?.Invoke(s);
            });

    private static HttpRequestMessage Order(string key, string orderId = "o-1", int quantity = 1, string path = "/orders", string? user = null)
    {
        var request = Http.Json(HttpMethod.Post, path, $$"""{"orderId":"{{orderId}}","quantity":{{quantity}}}""", key);
        if (user is not null)
        {
            request.Headers.Add("X-Test-User", user);
        }

        return request;
    }

    [Fact]
    public async Task SameKeyAndRequest_ReplaysTheFirstResponseByteForByte_WithTheReplayedHeader_AndRunsOnce()
    {
        await using var app = await StartAsync();

        var first = await app.Client.SendAsync(Order("key-1"));
        var second = await app.Client.SendAsync(Order("key-1"));

        Assert.Equal(HttpStatusCode.Accepted, first.StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, second.StatusCode);
        Assert.False(first.Headers.Contains("Idempotency-Replayed"));
        Assert.Equal("true", Assert.Single(second.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal(first.Headers.Location, second.Headers.Location);
        Assert.Equal("/orders/o-1", second.Headers.Location?.OriginalString);
        Assert.Equal(first.Content.Headers.ContentType?.ToString(), second.Content.Headers.ContentType?.ToString());
        Assert.Equal(await first.Content.ReadAsByteArrayAsync(), await second.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
        Assert.Single(await Observed.ReadAsync(app.Services.GetRequiredService<IEventStore>(), "o-1"));
    }

    [Fact]
    public async Task SameKeyWithAnotherBody_Answers422_AndRunsNothing()
    {
        await using var app = await StartAsync();
        await app.Client.SendAsync(Order("key-2", quantity: 1));

        var other = await app.Client.SendAsync(Order("key-2", quantity: 5));

        Assert.Equal(HttpStatusCode.UnprocessableEntity, other.StatusCode);
        Assert.Contains("Idempotency-Key", (await other.ProblemAsync()).GetProperty("title").GetString(), StringComparison.Ordinal);
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task SameKeyOnAnotherTargetOfTheSameRoute_Answers422()
    {
        await using var app = await StartAsync();
        await app.Client.PostAsync("/group/items/1", null);
        using var retry = new HttpRequestMessage(HttpMethod.Post, "/group/items/1");
        retry.Headers.Add("Idempotency-Key", "k");
        using var first = new HttpRequestMessage(HttpMethod.Post, "/group/items/1");
        first.Headers.Add("Idempotency-Key", "k");
        using var other = new HttpRequestMessage(HttpMethod.Post, "/group/items/2");
        other.Headers.Add("Idempotency-Key", "k");

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(first)).StatusCode);
        var replay = await app.Client.SendAsync(retry);
        var mismatch = await app.Client.SendAsync(other);

        Assert.Equal("true", Assert.Single(replay.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, mismatch.StatusCode);
        Assert.Equal(2, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task SameKeyWhileTheFirstIsInFlight_Answers409_WithRetryAfter()
    {
        await using var app = await StartAsync(o => o.RetryAfter = TimeSpan.FromSeconds(3));
        var gate = app.Services.GetRequiredService<Gate>();
        var first = app.Client.SendAsync(Order("key-3", path: "/gated"));
        await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(10));

        var second = await app.Client.SendAsync(Order("key-3", path: "/gated"));
        gate.Open.SetResult();
        var firstResponse = await first;

        Assert.Equal(HttpStatusCode.Conflict, second.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(3), second.Headers.RetryAfter?.Delta);
        Assert.Equal(409, (await second.ProblemAsync()).GetProperty("status").GetInt32());
        Assert.Equal(HttpStatusCode.Created, firstResponse.StatusCode);
        var third = await app.Client.SendAsync(Order("key-3", path: "/gated"));
        Assert.Equal(HttpStatusCode.Created, third.StatusCode);
        Assert.Equal("true", Assert.Single(third.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task ConcurrentRequestsWithOneKey_RunTheHandlerExactlyOnce()
    {
        await using var app = await StartAsync();
        var gate = app.Services.GetRequiredService<Gate>();
        const int requests = 8;

        // All start together; whichever takes the key holds it in the handler until every other request has been answered.
        var sent = Enumerable.Range(0, requests).Select(_ => Task.Run(() => app.Client.SendAsync(Order("key-4", path: "/gated")))).ToList();
        await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var answered = new List<HttpResponseMessage>();
        while (answered.Count < requests - 1)
        {
            var done = await Task.WhenAny(sent).WaitAsync(TimeSpan.FromSeconds(10));
            sent.Remove(done);
            answered.Add(await done);
        }

        gate.Open.SetResult();
        answered.Add(await Assert.Single(sent).WaitAsync(TimeSpan.FromSeconds(10)));

        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
        Assert.Single(answered, r => r.StatusCode == HttpStatusCode.Created);
        Assert.Equal(requests - 1, answered.Count(r => r.StatusCode == HttpStatusCode.Conflict));
    }

    [Fact]
    public async Task FirstAttemptThatThrowsOrAnswers5xx_ReleasesTheKey_SoARetryRuns()
    {
        await using var app = await StartAsync();

        var thrown = await app.Client.SendAsync(Order("key-5", path: "/flaky"));
        var unavailable = await app.Client.SendAsync(Order("key-5", path: "/flaky"));
        var succeeded = await app.Client.SendAsync(Order("key-5", path: "/flaky"));
        var replayed = await app.Client.SendAsync(Order("key-5", path: "/flaky"));

        Assert.Equal(HttpStatusCode.InternalServerError, thrown.StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, unavailable.StatusCode);
        Assert.Equal(HttpStatusCode.OK, succeeded.StatusCode);
        Assert.Equal("true", Assert.Single(replayed.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal(await succeeded.Content.ReadAsByteArrayAsync(), await replayed.Content.ReadAsByteArrayAsync());
        Assert.Equal(3, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task ValidationFailure_DoesNotClaimTheKey_SoTheCorrectedRequestRuns()
    {
        await using var app = await StartAsync();

        var invalid = await app.Client.SendAsync(Order("key-6", quantity: 0));
        var corrected = await app.Client.SendAsync(Order("key-6", quantity: 3));

        Assert.Equal(HttpStatusCode.BadRequest, invalid.StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, corrected.StatusCode);
        Assert.False(corrected.Headers.Contains("Idempotency-Replayed"));
    }

    [Fact]
    public async Task WrongContentType_IsRefusedBeforeTheKeyIsClaimed()
    {
        await using var app = await StartAsync();
        using var wrong = new HttpRequestMessage(HttpMethod.Post, "/orders") { Content = new StringContent("""{"orderId":"o-7","quantity":1}""", Encoding.UTF8, "text/plain") };
        wrong.Headers.Add("Idempotency-Key", "key-7");

        var refused = await app.Client.SendAsync(wrong);
        var accepted = await app.Client.SendAsync(Order("key-7", orderId: "o-7"));

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, refused.StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task MissingKey_RunsEveryTime_WhenTheKeyIsOptional()
    {
        await using var app = await StartAsync();

        await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"o-8","quantity":1}"""));
        var second = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"o-8","quantity":1}"""));

        // The second run reaches the handler, which refuses an order placed already (unmapped here: 500).
        Assert.Equal(HttpStatusCode.InternalServerError, second.StatusCode);
        Assert.False(second.Headers.Contains("Idempotency-Replayed"));
        Assert.Equal(2, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task MissingKey_Answers400_WhenTheKeyIsRequired()
    {
        await using var app = await StartAsync(o => o.Required = true);

        var response = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"o-9","quantity":1}"""));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("Idempotency-Key", (await response.ProblemAsync()).GetProperty("title").GetString(), StringComparison.Ordinal);
        Assert.Equal(0, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Theory]
    [InlineData("\"unterminated")]
    [InlineData("two words")]
    [InlineData("\"\"")]
    public async Task MalformedKey_Answers400(string key)
    {
        await using var app = await StartAsync();

        var response = await app.Client.SendAsync(Order(key));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("Idempotency-Key", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(0, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task KeyLongerThanTheLimit_Answers400()
    {
        await using var app = await StartAsync(o => o.MaxKeyLength = 10);

        var response = await app.Client.SendAsync(Order(new string('k', 11)));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
    }

    [Fact]
    public async Task QuotedStructuredFieldKey_AndItsBareForm_AreTheSameKey()
    {
        await using var app = await StartAsync();

        await app.Client.SendAsync(Order("\"8e03978e-40d5-43e8-bc93-6894a57f9324\""));
        var bare = await app.Client.SendAsync(Order("8e03978e-40d5-43e8-bc93-6894a57f9324"));

        Assert.Equal("true", Assert.Single(bare.Headers.GetValues("Idempotency-Replayed")));
    }

    [Fact]
    public async Task OneKeyOfTwoUsers_IsTwoKeys()
    {
        await using var app = await StartAsync();

        var ada = await app.Client.SendAsync(Order("shared", orderId: "o-ada", user: "ada"));
        var bob = await app.Client.SendAsync(Order("shared", orderId: "o-bob", user: "bob"));

        Assert.Equal(HttpStatusCode.Accepted, ada.StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, bob.StatusCode);
        Assert.False(bob.Headers.Contains("Idempotency-Replayed"));
        Assert.Equal(2, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task StoredResponse_ExpiresAfterTheExpiration_AndTheKeyRunsAgain()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        await using var app = await StartAsync(o => o.Expiration = TimeSpan.FromMinutes(10), s => s.AddSingleton<TimeProvider>(clock));
        await app.Client.SendAsync(Order("key-10", path: "/flaky"));
        await app.Client.SendAsync(Order("key-10", path: "/flaky"));
        await app.Client.SendAsync(Order("key-10", path: "/flaky"));

        clock.Advance(TimeSpan.FromMinutes(9));
        var kept = await app.Client.SendAsync(Order("key-10", path: "/flaky"));
        clock.Advance(TimeSpan.FromMinutes(2));
        var expired = await app.Client.SendAsync(Order("key-10", path: "/flaky"));

        Assert.True(kept.Headers.Contains("Idempotency-Replayed"));
        Assert.Equal(HttpStatusCode.OK, expired.StatusCode);
        Assert.False(expired.Headers.Contains("Idempotency-Replayed"));
        Assert.Equal(4, app.Services.GetRequiredService<Observed>().Runs);
    }
}
