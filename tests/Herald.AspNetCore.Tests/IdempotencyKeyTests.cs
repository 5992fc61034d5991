using System.Collections.Concurrent;
using System.Net;
using System.Security.Claims;
using System.Text;
using Herald.Cqrs;
using Herald.EventSourcing;
using Herald.Reliability.Idempotency;
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

                    if (context.Request.Headers.TryGetValue("X-Test-Subject", out var subject))
                    {
                        // Authenticated by a subject id only, with no name claim (a bearer token of an API client).
                        context.User = new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.NameIdentifier, subject.ToString())], "test"));
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
                app.MapPost("/held", async (PlaceOrder command, Observed observed, Gate gate, CancellationToken ct) =>
                {
                    // Runs until its request's token fires.
                    observed.Run();
                    gate.Entered.TrySetResult();
                    await Task.Delay(Timeout.Infinite, ct);
                    return Results.Ok(new { command.OrderId });
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
                app.MapPost("/ids", (HttpContext http, Observed observed) =>
                {
                    var id = http.GetIdempotentId();
                    observed.Ids.Enqueue(id);
                    return observed.Run() == 1
                        ? Results.StatusCode(StatusCodes.Status503ServiceUnavailable)
                        : Results.Ok(new { id, key = http.GetIdempotencyKey() });
                }).WithIdempotencyKey(configure);
                app.MapPost("/bare-404", (Observed observed) =>
                {
                    observed.Run();
                    return Results.NotFound();
                }).WithIdempotencyKey(configure);
                app.MapPost("/transient/{status:int}", (int status, Observed observed) =>
                {
                    // The first attempt is turned away for a reason that passes (rate limit, conflict, timeout); a retry succeeds.
                    var run = observed.Run();
                    return run == 1 ? Results.StatusCode(status) : Results.Ok(new { run });
                }).WithIdempotencyKey(configure);
                app.MapPost("/raw", async (HttpRequest request, Observed observed) =>
                {
                    using var reader = new StreamReader(request.Body);
                    return Results.Ok(new { body = await reader.ReadToEndAsync(), run = observed.Run() });
                }).WithIdempotencyKey(configure);
                app.MapPost("/no-key", (HttpContext http) => Results.Ok(new { id = http.GetIdempotentId(), key = http.GetIdempotencyKey() }));
                var group = app.MapGroup("/group").WithIdempotencyKey(configure);
                group.MapPost("/items/{id}", (string id, Observed observed) => Results.Ok(new { id, run = observed.Run() }));
            },
            herald,
            s =>
            {
                s.AddSingleton<Gate>();
                services?.Invoke(s);
            });

    private static HttpRequestMessage Order(string key, string orderId = "o-1", int quantity = 1, string path = "/orders", string? user = null, string? subject = null)
    {
        var request = Http.Json(HttpMethod.Post, path, $$"""{"orderId":"{{orderId}}","quantity":{{quantity}}}""", key);
        if (user is not null)
        {
            request.Headers.Add("X-Test-User", user);
        }

        if (subject is not null)
        {
            request.Headers.Add("X-Test-Subject", subject);
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
    public async Task TheIdempotentId_IsTheSameForEveryAttemptOfOneKey_AndDiffersByKeyAndUser()
    {
        await using var app = await StartAsync();

        // The first attempt fails (503 releases the key); the retry runs again and must see the same id.
        await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/ids", "{}", "op-1"));
        var retried = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/ids", "{}", "op-1"));
        var other = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/ids", "{}", "op-2"));
        var asAnotherUser = Http.Json(HttpMethod.Post, "/ids", "{}", "op-1");
        asAnotherUser.Headers.Add("X-Test-User", "mallory");
        await app.Client.SendAsync(asAnotherUser);
        var none = await app.Client.PostAsync("/no-key", null);

        Assert.Equal(HttpStatusCode.OK, retried.StatusCode);
        var ids = app.Services.GetRequiredService<Observed>().Ids.ToArray();
        Assert.Equal(4, ids.Length);
        Assert.NotNull(ids[0]);
        Assert.Equal(ids[0], ids[1]);
        Assert.NotEqual(ids[0], ids[2]);
        Assert.NotEqual(ids[0], ids[3]);
        Assert.Equal(8, ids[0]!.Value.Version);
        Assert.Equal(HttpStatusCode.OK, other.StatusCode);
        var body = System.Text.Json.JsonDocument.Parse(await none.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(System.Text.Json.JsonValueKind.Null, body.GetProperty("id").ValueKind);
        Assert.Equal(System.Text.Json.JsonValueKind.Null, body.GetProperty("key").ValueKind);
    }

    [Fact]
    public async Task BareClientError_IsReplayedAsTheSameProblem_NotAsAnEmptyBody()
    {
        await using var app = await StartAsync();

        var first = await app.Client.SendAsync(Order("key-bare", path: "/bare-404"));
        var second = await app.Client.SendAsync(Order("key-bare", path: "/bare-404"));

        Assert.Equal(HttpStatusCode.NotFound, first.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, second.StatusCode);
        Assert.Equal("true", Assert.Single(second.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal(404, (await first.ProblemAsync()).GetProperty("status").GetInt32());
        Assert.Equal(404, (await second.ProblemAsync()).GetProperty("status").GetInt32());
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
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

    /// <summary>
    /// A client error the endpoint answered for a passing reason (429 rate limited, 409 conflict, 408, 425, 423) was stored and
    /// replayed for the key's 24 hours: the client that was told to retry could never succeed with its key.
    /// </summary>
    [Theory]
    [InlineData(408)]
    [InlineData(409)]
    [InlineData(423)]
    [InlineData(425)]
    [InlineData(429)]
    public async Task FirstAttemptAnsweredWithARetryableClientError_ReleasesTheKey_SoARetryRuns(int status)
    {
        await using var app = await StartAsync();

        var refused = await app.Client.SendAsync(Http.Json(HttpMethod.Post, $"/transient/{status}", "{}", "key-transient"));
        var retried = await app.Client.SendAsync(Http.Json(HttpMethod.Post, $"/transient/{status}", "{}", "key-transient"));
        var replayed = await app.Client.SendAsync(Http.Json(HttpMethod.Post, $"/transient/{status}", "{}", "key-transient"));

        Assert.Equal(status, (int)refused.StatusCode);
        Assert.Equal(HttpStatusCode.OK, retried.StatusCode);
        Assert.False(retried.Headers.Contains("Idempotency-Replayed"));
        Assert.Equal("""{"run":2}""", await retried.Content.ReadAsStringAsync());
        Assert.Equal("true", Assert.Single(replayed.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal(2, app.Services.GetRequiredService<Observed>().Runs);
    }

    private static HttpRequestMessage Raw(string key, string body, string contentType)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/raw") { Content = new ByteArrayContent(Encoding.UTF8.GetBytes(body)) };
        request.Content.Headers.TryAddWithoutValidation("Content-Type", contentType);
        request.Headers.Add("Idempotency-Key", key);
        return request;
    }

    /// <summary>The fingerprint left out the media type: the same bytes sent as another media type were replayed instead of 422.</summary>
    [Fact]
    public async Task SameKeyAndBodyUnderAnotherMediaType_Answers422_AndRunsNothing()
    {
        await using var app = await StartAsync();

        var first = await app.Client.SendAsync(Raw("key-media", "a=1", "application/x-www-form-urlencoded"));
        var other = await app.Client.SendAsync(Raw("key-media", "a=1", "text/plain"));

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, other.StatusCode);
        Assert.False(other.Headers.Contains("Idempotency-Replayed"));
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Theory]
    [InlineData("application/json; charset=utf-8", "Application/JSON;Charset=\"UTF-8\"")]
    [InlineData("text/plain;charset=utf-8;format=flowed", "text/plain; format=flowed; charset=UTF-8")]
    public async Task SameKeyAndBodyUnderTheSameMediaTypeSpelledOtherwise_IsReplayed(string firstType, string retryType)
    {
        await using var app = await StartAsync();

        var first = await app.Client.SendAsync(Raw("key-spelled", "{}", firstType));
        var retry = await app.Client.SendAsync(Raw("key-spelled", "{}", retryType));

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal("true", Assert.Single(retry.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    /// <summary>
    /// A response stored by the previous version (no representation headers, a fingerprint without the media type) is
    /// replayed as it was then, not answered 422 or 500 after an upgrade.
    /// </summary>
    [Fact]
    public async Task ResponseStoredInThePreviousFormat_IsReplayedAfterTheUpgrade()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        await using var app = await StartAsync(services: s => s.AddSingleton<TimeProvider>(clock).AddSingleton<IIdempotencyStore>(new PreviousFormatStore(clock)));

        var first = await app.Client.SendAsync(Order("key-previous"));
        var retry = await app.Client.SendAsync(Order("key-previous"));

        Assert.Equal(HttpStatusCode.Accepted, retry.StatusCode);
        Assert.Equal("true", Assert.Single(retry.Headers.GetValues("Idempotency-Replayed")));
        Assert.Equal("/orders/o-1", retry.Headers.Location?.OriginalString);
        Assert.Equal(await first.Content.ReadAsByteArrayAsync(), await retry.Content.ReadAsByteArrayAsync());
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    /// <summary>The in-memory store, keeping a response only with the fields the previous version wrote.</summary>
    private sealed class PreviousFormatStore(TimeProvider time) : IIdempotencyStore
    {
        private static readonly string[] PreviousFields = ["v", "fingerprint", "status", "contentType", "location", "body"];

        private readonly InMemoryIdempotencyStore _inner = new(time);

        public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default) => _inner.TryAcquireAsync(key, lockTtl, cancellationToken);

        public ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default)
        {
            var node = System.Text.Json.Nodes.JsonNode.Parse(result.Span)!.AsObject();
            foreach (var name in node.Select(p => p.Key).Where(n => !PreviousFields.Contains(n)).ToList())
            {
                node.Remove(name);
            }

            return _inner.CompleteAsync(key, lockToken, Encoding.UTF8.GetBytes(node.ToJsonString()), ttl, cancellationToken);
        }

        public ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default) => _inner.ReleaseAsync(key, lockToken, cancellationToken);

        public ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default) => _inner.RenewAsync(key, lockToken, lockTtl, cancellationToken);
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
    public async Task OneKeyOfTwoUsersWithoutANameClaim_IsTwoKeys()
    {
        await using var app = await StartAsync();

        // Both users are authenticated by their subject id alone: their keys were scoped to the same empty name, so bob's
        // request met ada's key (422 here, or ada's stored response had he sent her body).
        var ada = await app.Client.SendAsync(Order("shared", orderId: "o-ada", subject: "ada-id"));
        var bob = await app.Client.SendAsync(Order("shared", orderId: "o-bob", subject: "bob-id"));

        Assert.Equal(HttpStatusCode.Accepted, ada.StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, bob.StatusCode);
        Assert.False(bob.Headers.Contains("Idempotency-Replayed"));
        Assert.Equal(2, app.Services.GetRequiredService<Observed>().Runs);
    }

    /// <summary>The in-memory store, keeping a corrupted copy of each response it is given to store.</summary>
    private sealed class CorruptingStore(TimeProvider time, string corruption) : IIdempotencyStore
    {
        private readonly InMemoryIdempotencyStore _inner = new(time);

        public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default) => _inner.TryAcquireAsync(key, lockTtl, cancellationToken);

        public ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default) =>
            _inner.CompleteAsync(key, lockToken, Corrupt(result.ToArray()), ttl, cancellationToken);

        public ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default) => _inner.ReleaseAsync(key, lockToken, cancellationToken);

        public ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default) => _inner.RenewAsync(key, lockToken, lockTtl, cancellationToken);

        private byte[] Corrupt(byte[] stored)
        {
            if (corruption == "not json")
            {
                return Encoding.UTF8.GetBytes("{\"v\":1,\"fingerprint\":");
            }

            // The fingerprint is left intact, so the retry matches the request and reaches the replay.
            var node = System.Text.Json.Nodes.JsonNode.Parse(stored)!.AsObject();
            var (name, value) = (corruption[..corruption.IndexOf(':', StringComparison.Ordinal)], corruption[(corruption.IndexOf(':', StringComparison.Ordinal) + 1)..]);
            node[name] = System.Text.Json.Nodes.JsonNode.Parse(value);
            return Encoding.UTF8.GetBytes(node.ToJsonString());
        }
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("body:null")]
    [InlineData("status:999")]
    [InlineData("status:101")]
    [InlineData("v:2")]
    [InlineData("contentType:\"text/plain\\r\\nSet-Cookie: session=stolen\"")]
    public async Task CorruptedStoredResponse_Answers500WithAProblem_AndIsNeitherReplayedNorRunAgain(string corruption)
    {
        var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        await using var app = await StartAsync(services: s => s.AddSingleton<TimeProvider>(clock).AddSingleton<IIdempotencyStore>(new CorruptingStore(clock, corruption)));

        var first = await app.Client.SendAsync(Order("key-corrupt"));
        var retry = await app.Client.SendAsync(Order("key-corrupt"));

        Assert.Equal(HttpStatusCode.Accepted, first.StatusCode);
        Assert.Equal(HttpStatusCode.InternalServerError, retry.StatusCode);
        Assert.False(retry.Headers.Contains("Idempotency-Replayed"));
        Assert.Contains("stored response", (await retry.ProblemAsync()).GetProperty("title").GetString(), StringComparison.Ordinal);
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    /// <summary>The in-memory store, counting lock renewals so a test knows when one happened.</summary>
    private sealed class RenewalCountingStore(TimeProvider time, int failures = 0) : IIdempotencyStore
    {
        private int _failures = failures;

        private readonly InMemoryIdempotencyStore _inner = new(time);
        private readonly System.Threading.Channels.Channel<bool> _renewals = System.Threading.Channels.Channel.CreateUnbounded<bool>();

        public Task<bool> NextRenewalAsync() => _renewals.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));

        public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default) => _inner.TryAcquireAsync(key, lockTtl, cancellationToken);

        public ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default) =>
            _inner.CompleteAsync(key, lockToken, result, ttl, cancellationToken);

        public ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default) => _inner.ReleaseAsync(key, lockToken, cancellationToken);

        public async ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default)
        {
            if (Interlocked.Decrement(ref _failures) >= 0)
            {
                _renewals.Writer.TryWrite(false);
                throw new InvalidOperationException("the store is restarting");
            }

            var renewed = await _inner.RenewAsync(key, lockToken, lockTtl, cancellationToken);
            _renewals.Writer.TryWrite(renewed);
            return renewed;
        }
    }

    [Fact]
    public async Task EndpointOutlivingTheLockTimeout_KeepsTheKey_BecauseItsLockIsRenewed()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var store = new RenewalCountingStore(clock);
        await using var app = await StartAsync(
            services: s => s.AddSingleton<TimeProvider>(clock).AddSingleton<IIdempotencyStore>(store),
            herald: h => h.ConfigureIdempotency(o => o.LockTimeout = TimeSpan.FromSeconds(30)));
        var gate = app.Services.GetRequiredService<Gate>();
        var first = app.Client.SendAsync(Order("key-11", path: "/gated"));
        await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(10));

        // Renewed every third of the timeout: the renewal at 10 s holds the lock to 40 s, so at 35 s it still holds (without
        // renewals it would have lapsed at 30 s and this request would run the endpoint a second time).
        clock.Advance(TimeSpan.FromSeconds(10));
        Assert.True(await store.NextRenewalAsync());
        clock.Advance(TimeSpan.FromSeconds(25));
        var during = await app.Client.SendAsync(Order("key-11", path: "/gated"));
        gate.Open.SetResult();

        Assert.Equal(HttpStatusCode.Conflict, during.StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await first).StatusCode);
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    [Fact]
    public async Task FailedLockRenewal_IsTriedAgainSoon_SoTheKeyIsKeptThroughAShortStoreOutage()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var store = new RenewalCountingStore(clock, failures: 2);
        await using var app = await StartAsync(
            services: s => s.AddSingleton<TimeProvider>(clock).AddSingleton<IIdempotencyStore>(store),
            herald: h => h.ConfigureIdempotency(o => o.LockTimeout = TimeSpan.FromSeconds(30)));
        var gate = app.Services.GetRequiredService<Gate>();
        var first = app.Client.SendAsync(Order("key-12", path: "/gated"));
        await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(10));

        // The renewals at 10 s and 12.5 s fail; the one at 15 s holds the lock to 45 s. A failed renewal was tried again only
        // a third of the timeout later (20 s, then 30 s), so two failures let the lock lapse at 30 s under a running endpoint.
        clock.Advance(TimeSpan.FromSeconds(10));
        Assert.False(await store.NextRenewalAsync());
        clock.Advance(TimeSpan.FromSeconds(2.5));
        Assert.False(await store.NextRenewalAsync());
        clock.Advance(TimeSpan.FromSeconds(2.5));
        Assert.True(await store.NextRenewalAsync());
        clock.Advance(TimeSpan.FromSeconds(16));
        var during = await app.Client.SendAsync(Order("key-12", path: "/gated"));
        gate.Open.SetResult();

        Assert.Equal(HttpStatusCode.Conflict, during.StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await first).StatusCode);
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    /// <summary>A fake clock that tells when a timer of a given due time is made (the store's retry pause), so a test moves it on only then.</summary>
    private sealed class TimerWatchingClock(DateTimeOffset start) : FakeTimeProvider(start)
    {
        private readonly ConcurrentQueue<(TimeSpan DueTime, TaskCompletionSource Made)> _watches = new();

        public Task TimerMade(TimeSpan dueTime)
        {
            var made = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _watches.Enqueue((dueTime, made));
            return made.Task;
        }

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = base.CreateTimer(callback, state, dueTime, period);
            foreach (var watch in _watches)
            {
                if (watch.DueTime == dueTime)
                {
                    watch.Made.TrySetResult();
                }
            }

            return timer;
        }
    }

    /// <summary>The in-memory store, whose first attempt to store a response fails (a server restarting).</summary>
    private sealed class FirstCompleteFailsStore(TimeProvider time) : IIdempotencyStore
    {
        private readonly InMemoryIdempotencyStore _inner = new(time);
        private int _failed;

        public TaskCompletionSource Failed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default) => _inner.TryAcquireAsync(key, lockTtl, cancellationToken);

        public ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default)
        {
            if (Interlocked.Exchange(ref _failed, 1) == 0)
            {
                Failed.TrySetResult();
                throw new InvalidOperationException("the store is restarting");
            }

            return _inner.CompleteAsync(key, lockToken, result, ttl, cancellationToken);
        }

        public ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default) => _inner.ReleaseAsync(key, lockToken, cancellationToken);

        public ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default) => _inner.RenewAsync(key, lockToken, lockTtl, cancellationToken);
    }

    [Fact]
    public async Task ResponseThatFailsToBeStored_IsStoredAgainShortly_SoARetryReplaysItInsteadOfRunningAgain()
    {
        var clock = new TimerWatchingClock(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var store = new FirstCompleteFailsStore(clock);
        await using var app = await StartAsync(
            services: s => s.AddSingleton<TimeProvider>(clock).AddSingleton<IIdempotencyStore>(store),
            herald: h => h.ConfigureIdempotency(o => o.LockTimeout = TimeSpan.FromSeconds(30)));

        // The first store attempt fails; the response was sent unstored, so once the lock lapsed a retry ran it again
        // (IdempotencyService already tried again, issue 10). Now it is stored on a later attempt, before it is sent.
        // The first retry pause is 50 ms on the fake clock: moved on once that pause's timer is made.
        var pause = clock.TimerMade(TimeSpan.FromMilliseconds(50));
        var first = app.Client.SendAsync(Order("key-13"));
        await store.Failed.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await pause.WaitAsync(TimeSpan.FromSeconds(10));
        clock.Advance(TimeSpan.FromMilliseconds(50));
        await first.WaitAsync(TimeSpan.FromSeconds(10));

        clock.Advance(TimeSpan.FromSeconds(31));
        var retry = await app.Client.SendAsync(Order("key-13"));

        Assert.Equal(HttpStatusCode.Accepted, (await first).StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, retry.StatusCode);
        Assert.True(retry.Headers.Contains("Idempotency-Replayed"));
        Assert.Equal(1, app.Services.GetRequiredService<Observed>().Runs);
    }

    /// <summary>The in-memory store, whose renewals find the lock taken by another holder.</summary>
    private sealed class LockTakenStore(TimeProvider time) : IIdempotencyStore
    {
        private readonly InMemoryIdempotencyStore _inner = new(time);

        public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default) => _inner.TryAcquireAsync(key, lockTtl, cancellationToken);

        public ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default) =>
            _inner.CompleteAsync(key, lockToken, result, ttl, cancellationToken);

        public ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default) => _inner.ReleaseAsync(key, lockToken, cancellationToken);

        public ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default) => ValueTask.FromResult(false);
    }

    [Fact]
    public async Task EndpointWhoseLockIsLost_IsCancelled_AndAnswers409()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        await using var app = await StartAsync(
            services: s => s.AddSingleton<TimeProvider>(clock).AddSingleton<IIdempotencyStore>(new LockTakenStore(clock)),
            herald: h => h.ConfigureIdempotency(o => o.LockTimeout = TimeSpan.FromSeconds(30)));
        var gate = app.Services.GetRequiredService<Gate>();
        var first = app.Client.SendAsync(Order("key-14", path: "/held"));
        await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(10));

        // The renewal at 10 s finds the key another request's: the endpoint's token fires, as IdempotencyService cancels its
        // operation, instead of the endpoint running on beside the new holder.
        clock.Advance(TimeSpan.FromSeconds(10));
        var response = await first.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    /// <summary>An Expiration too long to add to the time of day was accepted and failed every request with a key when its response was stored.</summary>
    [Fact]
    public async Task AnExpirationTooLongToAddToADate_FailsTheMappingNamingIt()
    {
        var refused = await Assert.ThrowsAnyAsync<ArgumentException>(() => StartAsync(o => o.Expiration = TimeSpan.MaxValue));

        Assert.Equal(nameof(IdempotencyKeyOptions.Expiration), refused.ParamName);
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
