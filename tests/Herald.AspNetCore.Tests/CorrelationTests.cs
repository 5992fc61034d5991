using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Security.Claims;
using System.Text.Json;
using Herald.Cqrs;
using Herald.EventSourcing;
using Herald.Messages;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.AspNetCore.Tests;

public sealed class CorrelationTests
{
    private static Task<TestApp> StartAsync(string? user = null, string claimType = ClaimTypes.Name) => TestApp.StartAsync(app =>
    {
        if (user is not null)
        {
            app.Use((context, next) =>
            {
                context.User = new ClaimsPrincipal(new ClaimsIdentity([new Claim(claimType, user)], "test"));
                return next(context);
            });
        }

        app.MapGet("/id", (HttpContext http) => Results.Json(new { correlationId = http.GetCorrelationId(), activity = Activity.Current?.GetTagItem("herald.correlation_id") }));
        app.MapPost("/orders", async (PlaceOrder command, HttpContext http, ICommandBus bus, CancellationToken ct) =>
        {
            await bus.SendAsync(command, http.GetEventMetadata(), ct);
            return Results.Accepted($"/orders/{command.OrderId}", new { requestId = http.TraceIdentifier });
        });
    });

    [Fact]
    public async Task CorrelationIdSent_IsEchoed_AndIsTheRequestsCorrelationId()
    {
        await using var app = await StartAsync();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/id");
        request.Headers.Add("X-Correlation-Id", "checkout-2024-000017");

        var response = await app.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("checkout-2024-000017", Assert.Single(response.Headers.GetValues("X-Correlation-Id")));
        Assert.Equal("checkout-2024-000017", (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("correlationId").GetString());
    }

    [Fact]
    public async Task CorrelationIdAbsent_IsMadeAsAGuidV7_AndEchoed()
    {
        await using var app = await StartAsync();

        var response = await app.Client.GetAsync("/id");

        var echoed = Assert.Single(response.Headers.GetValues("X-Correlation-Id"));
        Assert.Matches("^[0-9a-f]{32}$", echoed);
        Assert.Equal(7, Guid.ParseExact(echoed, "N").Version);
        Assert.Equal(echoed, (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("correlationId").GetString());
    }

    [Fact]
    public async Task CorrelationIdOf128Characters_IsAccepted()
    {
        await using var app = await StartAsync();
        var id = new string('a', 128);
        using var request = new HttpRequestMessage(HttpMethod.Get, "/id");
        request.Headers.Add("X-Correlation-Id", id);

        var response = await app.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(id, Assert.Single(response.Headers.GetValues("X-Correlation-Id")));
    }

    [Theory]
    [InlineData(129, "a")]
    [InlineData(0, "two words")]
    [InlineData(0, "tab\there")]
    public async Task MalformedCorrelationId_Answers400Problem_AndIsNotEchoed(int length, string value)
    {
        await using var app = await StartAsync();
        var id = length > 0 ? new string(value[0], length) : value;
        using var request = new HttpRequestMessage(HttpMethod.Get, "/id");
        request.Headers.TryAddWithoutValidation("X-Correlation-Id", id);

        var response = await app.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ProblemAsync();
        Assert.Contains("X-Correlation-Id", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        var echoed = Assert.Single(response.Headers.GetValues("X-Correlation-Id"));
        Assert.NotEqual(id, echoed);
        Assert.Equal(echoed, problem.GetProperty("correlationId").GetString());
    }

    [Fact]
    public async Task CommandSentWithTheRequestsMetadata_StoresAnEventCarryingTheCorrelationCauseAndTraceContext()
    {
        using var listener = ListenToAspNetCore();
        await using var app = await StartAsync();
        using var request = Http.Json(HttpMethod.Post, "/orders", """{"orderId":"o-1","quantity":2}""", correlationId: "flow-o-1");

        var response = await app.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var requestId = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("requestId").GetString();
        var stored = Assert.Single(await Observed.ReadAsync(app.Services.GetRequiredService<IEventStore>(), "o-1"));
        Assert.Equal("flow-o-1", stored.Envelope.CorrelationId);
        Assert.Equal(requestId, stored.Envelope.CausationId);
        Assert.Null(stored.Envelope.UserId);
        Assert.Matches("^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$", stored.Envelope.Headers[HeaderNames.TraceParent]);
    }

    [Fact]
    public async Task AuthenticatedUsersName_IsTheStoredEventsUserId()
    {
        await using var app = await StartAsync(user: "ada");

        await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"o-ada","quantity":1}"""));

        var stored = Assert.Single(await Observed.ReadAsync(app.Services.GetRequiredService<IEventStore>(), "o-ada"));
        Assert.Equal("ada", stored.Envelope.UserId);
    }

    /// <summary>
    /// A user authenticated by a subject id alone (an API client's bearer token, no name claim) had no UserId on its events,
    /// while the Idempotency-Key scope told such users apart by that very id.
    /// </summary>
    [Theory]
    [InlineData(ClaimTypes.NameIdentifier)]
    [InlineData("sub")]
    public async Task AuthenticatedUsersSubjectId_IsTheStoredEventsUserId_WhenItHasNoName(string claimType)
    {
        await using var app = await StartAsync(user: "client-7", claimType: claimType);

        await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"o-sub","quantity":1}"""));

        var stored = Assert.Single(await Observed.ReadAsync(app.Services.GetRequiredService<IEventStore>(), "o-sub"));
        Assert.Equal("client-7", stored.Envelope.UserId);
    }

    [Fact]
    public async Task MessagePublishedByTheCommandHandler_CarriesTheRequestsCorrelationId()
    {
        await using var app = await StartAsync();

        await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"o-note","quantity":1}""", correlationId: "flow-note"));

        var note = await app.Services.GetRequiredService<Observed>().NoteAsync("o-note");
        Assert.Equal("flow-note", note.CorrelationId);
    }

    [Fact]
    public async Task RequestActivity_IsTaggedWithTheCorrelationId()
    {
        using var listener = ListenToAspNetCore();
        await using var app = await StartAsync();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/id");
        request.Headers.Add("X-Correlation-Id", "tagged-1");

        var body = await (await app.Client.SendAsync(request)).Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal("tagged-1", body.GetProperty("activity").GetString());
    }

    // ASP.NET Core starts a request activity only when someone listens.
    private static ActivityListener ListenToAspNetCore()
    {
        var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == "Microsoft.AspNetCore",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllData,
        };
        ActivitySource.AddActivityListener(listener);
        return listener;
    }
}
