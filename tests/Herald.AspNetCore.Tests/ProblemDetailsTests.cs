using System.Net;
using System.Text;
using System.Text.Json;
using Herald.Cqrs;
using Herald.Cqrs.Validation;
using Herald.EventSourcing;
using Herald.Sagas;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.AspNetCore.Tests;

public sealed class ProblemDetailsTests
{
    private static Task<TestApp> StartAsync(Action<IServiceCollection>? servicesAfterHerald = null) => TestApp.StartAsync(
        app =>
        {
            app.MapPost("/orders", async (PlaceOrder command, HttpContext http, ICommandBus bus, CancellationToken ct) =>
            {
                await bus.SendAsync(command, http.GetEventMetadata(), ct);
                return Results.Accepted($"/orders/{command.OrderId}");
            });
            app.MapPost("/carts", (Cart cart) => Results.Ok(cart.Lines.Length));
            app.MapPost("/conflict", () => { throw new ConcurrencyException("order-secret-7", ExpectedVersion.NoStream, 3); });
            app.MapPost("/saga-conflict", () => { throw new SagaConcurrencyException("fulfilment", "7", 2, 3); });
            app.MapPost("/deleted-during-read", () => { throw new StreamDeletedDuringReadException("order-secret-8", 7); });
            app.MapPost("/many-errors", () =>
            {
                throw new ValidationException(typeof(PlaceOrder), [.. Enumerable.Range(0, 5000).Select(i => new ValidationError($"Lines[{i}]", "is required"))]);
            });
            app.MapGet("/page", (int? pageSize, Guid? after, bool? open) => Results.Ok(pageSize));
            app.MapGet("/required", (int pageSize) => Results.Ok(pageSize));
            app.MapPost("/boom", () => { throw new InvalidOperationException("password=hunter2 in the connection string"); });
            app.MapPost("/app-bug", () => { throw new ArgumentException("password=hunter2 is not a valid port", "port"); });
            app.MapPost("/too-large", () => { throw new BadHttpRequestException("Request body too large. The max request body size is 10 bytes.", 413); });
        },
        http: o => o.MapException<OrderRuleBrokenException>(StatusCodes.Status422UnprocessableEntity, "The order breaks a rule."),
        servicesAfterHerald: servicesAfterHerald);

    [Fact]
    public async Task ValidationFailure_Answers400_ListingEveryErrorByItsJsonName_AndStoresNothing()
    {
        await using var app = await StartAsync();

        var response = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"","quantity":0}"""));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ProblemAsync();
        Assert.Equal(400, problem.GetProperty("status").GetInt32());
        var errors = problem.GetProperty("errors");
        Assert.Equal(["is required"], errors.GetProperty("orderId").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(["must be positive", "must be between 1 and 100"], errors.GetProperty("quantity").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(0, await app.Services.GetRequiredService<IEventStore>().GetLastPositionAsync());
    }

    [Fact]
    public async Task ThousandsOfValidationErrors_Answers400_ListingTheFirst20_AndCountingTheRest()
    {
        await using var app = await StartAsync();

        var response = await app.Client.PostAsync("/many-errors", null);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ProblemAsync();
        Assert.Equal(
            Enumerable.Range(0, 20).Select(i => $"lines[{i}]"),
            problem.GetProperty("errors").EnumerateObject().Select(e => e.Name));
        Assert.Equal("5000 errors; the first 20 are listed, 4980 more are not.", problem.GetProperty("detail").GetString());
    }

    [Theory]
    [InlineData("/page?pageSize=twenty", "pageSize must be a whole number.")]
    [InlineData("/page?after=last", "after must be a GUID (such as 0190d6f0-3c8e-7b6a-9f1e-2d4c5b6a7e8f).")]
    [InlineData("/page?open=maybe", "open must be true or false.")]
    [InlineData("/required", "pageSize is required.")]
    public async Task UnboundQueryParameter_Answers400_SayingWhatIsExpected_WithoutNamingClrTypes(string uri, string detail)
    {
        await using var app = await StartAsync();

        var response = await app.Client.GetAsync(uri);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ProblemAsync();
        Assert.Equal(detail, problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task ConcurrencyConflict_Answers409_WithoutTheStreamsDetails()
    {
        await using var app = await StartAsync();

        var response = await app.Client.PostAsync("/conflict", null);

        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(409, JsonDocument.Parse(text).RootElement.GetProperty("status").GetInt32());
        Assert.DoesNotContain("order-secret-7", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AStreamDeletedDuringItsRead_Answers409_WithoutTheStreamsDetails()
    {
        await using var app = await StartAsync();

        var response = await app.Client.PostAsync("/deleted-during-read", null);

        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(409, JsonDocument.Parse(text).RootElement.GetProperty("status").GetInt32());
        Assert.DoesNotContain("order-secret-8", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SagaConcurrencyConflict_Answers409()
    {
        await using var app = await StartAsync();

        var response = await app.Client.PostAsync("/saga-conflict", null);

        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        Assert.Equal(409, (await response.ProblemAsync()).GetProperty("status").GetInt32());
    }

    [Fact]
    public async Task MalformedJson_Answers400_WithWhereTheJsonWentWrong_AndStoresNothing()
    {
        await using var app = await StartAsync();

        var response = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"a","quantity": }"""));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var detail = (await response.ProblemAsync()).GetProperty("detail").GetString()!;
        Assert.Contains("not valid JSON", detail, StringComparison.Ordinal);
        Assert.Contains("$.quantity", detail, StringComparison.Ordinal);
        Assert.DoesNotContain("System.", detail, StringComparison.Ordinal);
        Assert.Equal(0, await app.Services.GetRequiredService<IEventStore>().GetLastPositionAsync());
    }

    [Fact]
    public async Task WrongJsonType_Answers400_WithoutNamingClrTypes()
    {
        await using var app = await StartAsync();

        var response = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"a","quantity":"many"}"""));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var detail = (await response.ProblemAsync()).GetProperty("detail").GetString()!;
        Assert.Contains("$.quantity", detail, StringComparison.Ordinal);
        Assert.DoesNotContain("Int32", detail, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("""{"orderId":"a","quantity":"many"}""", "quantity", "must be a whole number.")]
    [InlineData("""{"orderId":7,"quantity":1}""", "orderId", "must be a string.")]
    [InlineData("""{"orderId":"a","quantity":1.5}""", "quantity", "must be a whole number.")]
    public async Task WrongJsonType_ListsTheErrorUnderTheMembersJsonName_AsValidationFailuresDo(string body, string member, string message)
    {
        await using var app = await StartAsync();

        var response = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", body));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var errors = (await response.ProblemAsync()).GetProperty("errors");
        Assert.Equal([member], errors.EnumerateObject().Select(e => e.Name));
        Assert.Equal([message], errors.GetProperty(member).EnumerateArray().Select(e => e.GetString()));
    }

    [Theory]
    [InlineData("""{"id":"a","lines":[{"sku":"x","qty":"q"}]}""", "lines[0].qty", "must be a whole number.")]
    [InlineData("""{"id":"a","lines":{}}""", "lines", "must be an array.")]
    [InlineData("""{"id":"a","lines":[],"tags":{"a":"b"}}""", "tags.a", "must be a whole number.")]
    [InlineData("""{"id":"a","lines":[],"tags":{"odd key":true}}""", "tags['odd key']", "must be a whole number.")]
    [InlineData("""{"id":"a","lines":[{"sku":"x","qty":1,"colour":"green"}]}""", "lines[0].colour", "must be one of the allowed values.")]
    [InlineData("""{"id":"a","lines":[{"sku":"x","qty":1,"at":"soon"}]}""", "lines[0].at", "must be a date and time (such as 2026-01-31T12:00:00Z).")]
    [InlineData("""{"id":"a","lines":[7]}""", "lines[0]", "must be an object.")]
    public async Task WrongJsonTypeInsideTheBody_NamesTheMembersPath_AndWhatItTakes(string body, string member, string message)
    {
        await using var app = await StartAsync();

        var response = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/carts", body));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var errors = (await response.ProblemAsync()).GetProperty("errors");
        Assert.Equal([member], errors.EnumerateObject().Select(e => e.Name));
        Assert.Equal([message], errors.GetProperty(member).EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public async Task MalformedJson_ListsTheErrorWhereTheJsonWentWrong()
    {
        await using var app = await StartAsync();

        var response = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"a","quantity": }"""));

        var errors = (await response.ProblemAsync()).GetProperty("errors");
        var error = Assert.Single(errors.GetProperty("quantity").EnumerateArray()).GetString()!;
        Assert.StartsWith("is not valid JSON (line 1, byte ", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task JsonThatIsNotAnObjectAtAll_ListsTheErrorUnderTheRoot()
    {
        await using var app = await StartAsync();

        var response = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", "[1, 2]"));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var errors = (await response.ProblemAsync()).GetProperty("errors");
        Assert.Equal(["$"], errors.EnumerateObject().Select(e => e.Name));
        Assert.Equal(["must be an object."], errors.GetProperty("$").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public async Task StrictJson_ListsEachMissingMember_AndAnUnknownOne_UnderItsJsonName()
    {
        await using var app = await StartAsync(services => services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.RespectRequiredConstructorParameters = true;
            o.SerializerOptions.UnmappedMemberHandling = System.Text.Json.Serialization.JsonUnmappedMemberHandling.Disallow;
        }));

        var missing = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{}"""));
        var unknown = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"a","quantity":1,"colour":"red"}"""));

        Assert.Equal(HttpStatusCode.BadRequest, missing.StatusCode);
        var missingErrors = (await missing.ProblemAsync()).GetProperty("errors");
        Assert.Equal(["orderId", "quantity"], missingErrors.EnumerateObject().Select(e => e.Name).Order(StringComparer.Ordinal));
        Assert.Equal(["is required."], missingErrors.GetProperty("quantity").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(HttpStatusCode.BadRequest, unknown.StatusCode);
        var unknownErrors = (await unknown.ProblemAsync()).GetProperty("errors");
        Assert.Equal(["colour"], unknownErrors.EnumerateObject().Select(e => e.Name));
        Assert.Equal(["is not a member of this request."], unknownErrors.GetProperty("colour").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(0, await app.Services.GetRequiredService<IEventStore>().GetLastPositionAsync());
    }

    [Fact]
    public async Task MissingBody_Answers400_WithTheReason()
    {
        await using var app = await StartAsync();

        var response = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", ""));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.False(string.IsNullOrEmpty((await response.ProblemAsync()).GetProperty("detail").GetString()));
    }

    [Fact]
    public async Task NonJsonContentType_OnAJsonBody_Answers415_WithTheReason()
    {
        await using var app = await StartAsync();

        var response = await app.Client.PostAsync("/orders", new StringContent("orderId=a", Encoding.UTF8, "text/plain"));

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Contains("text/plain", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task StatusesRoutingAnswersWithoutABody_AreProblemsSayingWhy()
    {
        await using var app = await StartAsync();

        var notFound = await app.Client.GetAsync("/nowhere");
        var wrongMethod = await app.Client.DeleteAsync("/orders");

        Assert.Equal(HttpStatusCode.NotFound, notFound.StatusCode);
        var missing = await notFound.ProblemAsync();
        Assert.Equal(404, missing.GetProperty("status").GetInt32());
        Assert.False(string.IsNullOrEmpty(missing.GetProperty("detail").GetString()), missing.ToString());
        Assert.Equal(HttpStatusCode.MethodNotAllowed, wrongMethod.StatusCode);
        Assert.Equal(["POST"], wrongMethod.Content.Headers.Allow);
        var refused = await wrongMethod.ProblemAsync();
        Assert.Equal(405, refused.GetProperty("status").GetInt32());
        Assert.Equal("This resource answers only the methods POST (see Allow).", refused.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task ProblemsAnEndpointWritesWithADetail_KeepTheirDetail()
    {
        await using var app = await TestApp.StartAsync(app => app.MapGet("/gone", () => Results.Problem(statusCode: 404, detail: "There is no order 7.")));

        var response = await app.Client.GetAsync("/gone");

        Assert.Equal("There is no order 7.", (await response.ProblemAsync()).GetProperty("detail").GetString());
    }

    [Fact]
    public async Task OversizedBodyRejectedByTheServer_Answers413()
    {
        await using var app = await StartAsync();

        var response = await app.Client.PostAsync("/too-large", null);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal(413, (await response.ProblemAsync()).GetProperty("status").GetInt32());
    }

    [Fact]
    public async Task MappedDomainException_AnswersItsStatus_WithItsMessage()
    {
        await using var app = await StartAsync();
        await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"twice","quantity":1}"""));

        var response = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", """{"orderId":"twice","quantity":1}"""));

        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.StatusCode);
        var problem = await response.ProblemAsync();
        Assert.Equal("The order breaks a rule.", problem.GetProperty("title").GetString());
        Assert.Equal("Order twice was placed already.", problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task AggregateIdThatMakesTooLongAStreamName_Answers400_SayingTheStreamNameIsInvalid_AndStoresNothing()
    {
        await using var app = await StartAsync();
        var id = new string('x', 300);

        var response = await app.Client.SendAsync(Http.Json(HttpMethod.Post, "/orders", $$"""{"orderId":"{{id}}","quantity":1}"""));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ProblemAsync();
        Assert.Equal("The stream name is not valid.", problem.GetProperty("title").GetString());
        Assert.Contains($"at most {StreamName.MaxLength}", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(0, await app.Services.GetRequiredService<IEventStore>().GetLastPositionAsync());
    }

    [Fact]
    public async Task ArgumentExceptionFromTheApplication_StillAnswers500_WithoutItsMessage()
    {
        await using var app = await StartAsync();

        var response = await app.Client.PostAsync("/app-bug", null);

        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        Assert.DoesNotContain("hunter2", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task UnknownException_Answers500_WithoutItsMessage()
    {
        await using var app = await StartAsync();

        var response = await app.Client.PostAsync("/boom", null);

        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        var text = await response.Content.ReadAsStringAsync();
        Assert.DoesNotContain("hunter2", text, StringComparison.Ordinal);
        Assert.DoesNotContain("InvalidOperationException", text, StringComparison.Ordinal);
        Assert.Equal(500, JsonDocument.Parse(text).RootElement.GetProperty("status").GetInt32());
    }

    [Theory]
    [InlineData("/boom", 500)]
    [InlineData("/conflict", 409)]
    public async Task EveryProblem_CarriesTheTraceIdAndTheRequestsCorrelationId(string path, int status)
    {
        await using var app = await StartAsync();
        using var request = new HttpRequestMessage(HttpMethod.Post, path);
        request.Headers.Add("X-Correlation-Id", "flow-42");

        var response = await app.Client.SendAsync(request);

        Assert.Equal(status, (int)response.StatusCode);
        var problem = await response.ProblemAsync();
        Assert.Equal("flow-42", problem.GetProperty("correlationId").GetString());
        Assert.False(string.IsNullOrEmpty(problem.GetProperty("traceId").GetString()));
        Assert.Equal("flow-42", Assert.Single(response.Headers.GetValues("X-Correlation-Id")));
    }

    /// <summary>
    /// An application customizing its problems the usual way after AddHeraldAspNetCore (<c>AddProblemDetails(o =>
    /// o.CustomizeProblemDetails = ...)</c>) replaced Herald's customization: its problems lost traceId and correlationId.
    /// </summary>
    [Theory]
    [InlineData("POST", "/conflict", 409)]
    [InlineData("GET", "/page?pageSize=many", 400)]
    [InlineData("GET", "/nowhere", 404)]
    public async Task ProblemsCustomizedByTheApplicationAfterwards_StillCarryTheTraceIdAndTheCorrelationId(string method, string path, int status)
    {
        await using var app = await StartAsync(s => s.AddProblemDetails(o => o.CustomizeProblemDetails = c => c.ProblemDetails.Extensions["node"] = "node-1"));
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        request.Headers.Add("X-Correlation-Id", "flow-43");

        var response = await app.Client.SendAsync(request);

        Assert.Equal(status, (int)response.StatusCode);
        var problem = await response.ProblemAsync();
        Assert.Equal("node-1", problem.GetProperty("node").GetString());
        Assert.True(problem.TryGetProperty("correlationId", out var correlationId), problem.ToString());
        Assert.Equal("flow-43", correlationId.GetString());
        Assert.False(string.IsNullOrEmpty(problem.GetProperty("traceId").GetString()));
    }
}

public sealed class ValidationErrorNameTests
{
    [Theory]
    [InlineData("OrderId", "orderId")]
    [InlineData("Items[2].Quantity", "items[2].quantity")]
    [InlineData("", "")]
    public void ErrorsAreKeyedByTheJsonNamesTheClientSent(string property, string expected) =>
        Assert.Equal(expected, Herald.AspNetCore.Problems.HeraldExceptionHandler.JsonPath(property, JsonNamingPolicy.CamelCase));
}
