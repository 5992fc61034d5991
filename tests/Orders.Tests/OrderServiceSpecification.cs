using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Herald.Sagas;
using Orders.Api;
using Orders.ReadModel;

namespace Orders.Tests;

/// <summary>
/// The order service end to end over real HTTP, the same on every profile: a derived class starts the instance on its
/// profile (a temporary SQLite file, or a PostgreSQL schema and RabbitMQ queues of its own).
/// </summary>
public abstract class OrderServiceSpecification
{
    protected abstract ServiceInstance Service { get; }

    [Fact]
    public async Task PlacedOrder_IsConfirmed_AndEveryEventOfItCarriesTheRequestsCorrelationIdAndOneTrace()
    {
        var correlationId = "happy-" + Guid.NewGuid().ToString("N");
        using var response = await PostOrderAsync(new { customerId = "ada", lines = new object[] { new { sku = "keyboard", quantity = 1 }, new { sku = "cable", quantity = 2 } } }, correlationId: correlationId);

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal(correlationId, response.Headers.GetValues("X-Correlation-Id").Single());
        var accepted = (await response.Content.ReadFromJsonAsync<PlaceOrderResponse>())!;
        Assert.Equal($"/orders/{accepted.OrderId}", response.Headers.Location!.OriginalString);
        Assert.Equal(58.90m, accepted.Total);

        var order = await Service.WaitForFinalStateAsync(accepted.OrderId);
        Assert.Equal(OrderStates.Confirmed, order.Status);
        Assert.Equal("Ada Lovelace", order.CustomerName);
        Assert.Equal(["Mechanical keyboard", "USB-C cable"], order.Lines.Select(l => l.Name));
        Assert.Equal(correlationId, order.CorrelationId);
        Assert.StartsWith("TRK-", order.TrackingNumber, StringComparison.Ordinal);

        var history = (await Service.Http.GetFromJsonAsync<OrderHistory>($"/orders/{accepted.OrderId}/history"))!;
        Assert.Equal(["order-placed", "stock-reserved", "payment-charged", "order-confirmed"], history.Events.Select(e => e.Type));
        Assert.Equal([1L, 2L, 3L, 4L], history.Events.Select(e => e.Version));
        Assert.True(history.Events.Zip(history.Events.Skip(1)).All(p => p.First.Position < p.Second.Position), "positions increase along the stream");
        Assert.All(history.Events, e => Assert.Equal(correlationId, e.CorrelationId));
        Assert.Equal(
            [$"order-fulfilment/{accepted.OrderId}/reserve-stock", $"order-fulfilment/{accepted.OrderId}/charge-payment", $"order-fulfilment/{accepted.OrderId}/ship"],
            history.Events.Skip(1).Select(e => e.CausationId));
        // One trace from the POST through the saga's steps: every event carries a traceparent of the same trace id.
        var traceIds = history.Events.Select(e => e.TraceParent?.Split('-')[1]).Distinct().ToList();
        Assert.Single(traceIds);
        Assert.NotNull(traceIds[0]);

        // No event of the whole log carries this correlation id without being one of this order's.
        Assert.Equal(4, (await Service.EventsCorrelatedToAsync(correlationId)).Count);
        var counts = await Service.Ledger.CountAsync(accepted.OrderId, CancellationToken.None);
        Assert.Equal((1L, 0L, 1L, 0L, 1L), (counts.Reservations, counts.Released, counts.Payments, counts.Refunded, counts.Shipments));
    }

    [Fact]
    public async Task TheLinkOfAnAcceptedOrder_ReadAtOnce_FindsTheOrder_NotA404BeforeTheReadModelCaughtUp()
    {
        // Each order read back the moment its 202 arrives, many at once so the projection is behind some of them: the link
        // the 202 gave answers the order (it waits for the read model), never 404 for an order that was placed.
        var placed = await Task.WhenAll(Enumerable.Range(0, 24).Select(async i =>
        {
            using var response = await PostOrderAsync(new { customerId = "ada", lines = new object[] { new { sku = "cable", quantity = 1 + (i % 3) } } });
            Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
            var accepted = (await response.Content.ReadFromJsonAsync<PlaceOrderResponse>())!;
            using var read = await Service.Http.GetAsync(response.Headers.Location);
            return (accepted, read.StatusCode, Body: await read.Content.ReadAsStringAsync());
        }));

        Assert.All(placed, p => Assert.True(p.StatusCode == HttpStatusCode.OK, $"GET of order {p.accepted.OrderId} right after its 202 answered {(int)p.StatusCode}: {p.Body}"));
        Assert.All(placed, p => Assert.Equal(p.accepted.OrderId.ToString(), JsonDocument.Parse(p.Body).RootElement.GetProperty("id").GetString()));

        // An id of no order still answers 404 at once (nothing is waited for).
        using var unknown = await Service.Http.GetAsync($"/orders/{Guid.NewGuid()}");
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
    }

    [Fact]
    public async Task DeclinedPayment_IsCompensated_StockReleasedAndOrderCancelled()
    {
        var correlationId = "declined-" + Guid.NewGuid().ToString("N");
        using var response = await PostOrderAsync(new { customerId = "bad-card", lines = new[] { new { sku = "mouse", quantity = 1 } } }, correlationId: correlationId);
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var accepted = (await response.Content.ReadFromJsonAsync<PlaceOrderResponse>())!;

        var order = await Service.WaitForFinalStateAsync(accepted.OrderId);
        Assert.Equal(OrderStates.Cancelled, order.Status);
        Assert.True(order.CancelledByCompensation);
        Assert.True(order.StockReleased);
        Assert.Contains("declined", order.CancelReason, StringComparison.Ordinal);

        var history = (await Service.Http.GetFromJsonAsync<OrderHistory>($"/orders/{accepted.OrderId}/history"))!;
        Assert.Equal(["order-placed", "stock-reserved", "stock-released", "order-cancelled"], history.Events.Select(e => e.Type));
        Assert.All(history.Events, e => Assert.Equal(correlationId, e.CorrelationId));
        var counts = await Service.Ledger.CountAsync(accepted.OrderId, CancellationToken.None);
        Assert.Equal((1L, 1L, 0L, 0L), (counts.Reservations, counts.Released, counts.Payments, counts.Shipments));

        // Cancelling an order that does not exist: 404.
        using var again = await Service.Http.PostAsync($"/orders/{Guid.NewGuid()}/cancel", null);
        Assert.Equal(HttpStatusCode.NotFound, again.StatusCode);
    }

    [Theory]
    [InlineData("inventory_reservations", new[] { "order-placed", "order-cancelled" })]
    [InlineData("payments", new[] { "order-placed", "stock-reserved", "order-cancelled", "stock-released" })]
    [InlineData("shipments", new[] { "order-placed", "stock-reserved", "payment-charged", "order-cancelled", "payment-refunded", "stock-released" })]
    public async Task CustomerCancellingDuringFulfilment_StopsIt_AndItsDoneStepsAreCompensated(string heldAt, string[] expectedHistory)
    {
        // The saga is held where a step writes (stock, payment or shipment): the steps before it are committed.
        var correlationId = "cancel-during-" + Guid.NewGuid().ToString("N");
        var hold = Service.Gate.HoldWrite(correlationId, heldAt);
        Guid id;
        try
        {
            using var placed = await PostOrderAsync(new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 2 } } }, correlationId: correlationId);
            Assert.Equal(HttpStatusCode.Accepted, placed.StatusCode);
            id = (await placed.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId;
            await hold.Reached.WaitAsync(Eventually.DefaultTimeout);

            using var cancel = new HttpRequestMessage(HttpMethod.Post, $"/orders/{id}/cancel") { Content = JsonContent.Create(new { reason = "changed my mind" }) };
            cancel.Headers.Add("X-Correlation-Id", correlationId);
            using var cancelled = await Service.Http.SendAsync(cancel);
            Assert.Equal(HttpStatusCode.Accepted, cancelled.StatusCode);
        }
        finally
        {
            hold.Release();
        }

        // The held step finds the order cancelled (a rule of the order, never retried): the saga undoes what was done.
        Assert.Equal(SagaStatus.Compensated, await Service.WaitForFulfilmentToEndAsync(id));
        var reserved = heldAt != "inventory_reservations" ? 1L : 0L;
        var charged = heldAt == "shipments" ? 1L : 0L;
        var order = await Service.WaitForOrderAsync(
            id, o => o.Status == OrderStates.Cancelled && o.StockReleased == (reserved == 1) && o.Refunded == (charged == 1), "shows its compensation");
        Assert.False(order.CancelledByCompensation);
        Assert.Equal("changed my mind", order.CancelReason);
        Assert.Null(order.TrackingNumber);

        var history = (await Service.Http.GetFromJsonAsync<OrderHistory>($"/orders/{id}/history"))!;
        Assert.Equal(expectedHistory, history.Events.Select(e => e.Type));
        var counts = await Service.Ledger.CountAsync(id, CancellationToken.None);
        Assert.Equal((reserved, reserved, charged, charged, 0L), (counts.Reservations, counts.Released, counts.Payments, counts.Refunded, counts.Shipments));
    }

    [Fact]
    public async Task CancelsAtOnce_CancelTheOrderOnce_AndEachIsAnswered202Or409()
    {
        var correlationId = "cancels-" + Guid.NewGuid().ToString("N");
        var hold = Service.Gate.HoldWrite(correlationId, "payments");
        Guid id;
        try
        {
            using var placed = await PostOrderAsync(new { customerId = "ada", lines = new[] { new { sku = "mouse", quantity = 1 } } }, correlationId: correlationId);
            id = (await placed.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId;
            await hold.Reached.WaitAsync(Eventually.DefaultTimeout);

            // They load the same version of the order: one appends, the others conflict (or, later, find it cancelled).
            var answers = await Task.WhenAll(Enumerable.Range(0, 8).Select(async i =>
            {
                using var response = await Service.Http.PostAsync($"/orders/{id}/cancel", JsonContent.Create(new { reason = $"cancel {i}" }));
                var body = await response.Content.ReadAsStringAsync();
                return (response.StatusCode, body);
            }));
            Assert.All(answers, a => Assert.True(a.StatusCode is HttpStatusCode.Accepted or HttpStatusCode.Conflict, $"{(int)a.StatusCode}: {a.body}"));
            Assert.Contains(answers, a => a.StatusCode == HttpStatusCode.Accepted);
        }
        finally
        {
            hold.Release();
        }

        Assert.Equal(SagaStatus.Compensated, await Service.WaitForFulfilmentToEndAsync(id));
        var history = (await Service.Http.GetFromJsonAsync<OrderHistory>($"/orders/{id}/history"))!;
        Assert.Single(history.Events, e => e.Type == "order-cancelled");
    }

    [Fact]
    public async Task RetriedPost_WithTheSameIdempotencyKey_GivesTheSameResponseAndOneOrder_AndAnotherBodyGets422()
    {
        var key = "retry-" + Guid.NewGuid().ToString("N");
        var correlationId = "retry-" + Guid.NewGuid().ToString("N");
        var body = new { customerId = "grace", lines = new[] { new { sku = "monitor", quantity = 1 } } };
        using var first = await PostOrderAsync(body, key, correlationId);
        using var second = await PostOrderAsync(body, key, correlationId);

        Assert.Equal(HttpStatusCode.Accepted, first.StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, second.StatusCode);
        Assert.Equal(first.Headers.Location, second.Headers.Location);
        Assert.Equal(await first.Content.ReadAsStringAsync(), await second.Content.ReadAsStringAsync());

        using var other = await PostOrderAsync(new { customerId = "grace", lines = new[] { new { sku = "monitor", quantity = 2 } } }, key, correlationId);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, other.StatusCode);
        Assert.Equal("application/problem+json", other.Content.Headers.ContentType?.MediaType);

        var accepted = (await first.Content.ReadFromJsonAsync<PlaceOrderResponse>())!;
        var order = await Service.WaitForFinalStateAsync(accepted.OrderId);
        Assert.Equal(OrderStates.Confirmed, order.Status);
        var placed = (await Service.EventsCorrelatedToAsync(correlationId)).Count(e => e.EventType == "order-placed");
        Assert.Equal(1, placed);

        // A confirmed order is past cancelling: a rule of the order, 422.
        using var cancel = await Service.Http.PostAsync($"/orders/{accepted.OrderId}/cancel", null);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, cancel.StatusCode);
    }

    [Fact]
    public async Task KeyWhoseStoredResponseIsGone_FindsItsOrderForTheSameBody_AndAnswersAnotherBody422_PlacingNothing()
    {
        var key = "gone-" + Guid.NewGuid().ToString("N");
        var body = new { customerId = "grace", lines = new[] { new { sku = "monitor", quantity = 1 } } };
        using var first = await PostOrderAsync(body, key);
        Assert.Equal(HttpStatusCode.Accepted, first.StatusCode);
        var placed = (await first.Content.ReadFromJsonAsync<PlaceOrderResponse>())!;

        // The stored response expired (or the first attempt crashed before storing it): the key's order is found again.
        Assert.True(await Service.ForgetStoredOrderResponseAsync(key), "the first response was stored under the key");
        using var same = await PostOrderAsync(body, key);
        Assert.Equal(HttpStatusCode.Accepted, same.StatusCode);
        Assert.Equal(placed.OrderId, (await same.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId);

        // Another order under the used key: refused as the key's kept response refuses it, not answered as if placed.
        Assert.True(await Service.ForgetStoredOrderResponseAsync(key), "the retry's response was stored under the key");
        var correlationId = "gone-" + Guid.NewGuid().ToString("N");
        using var other = await PostOrderAsync(new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 3 } } }, key, correlationId);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, other.StatusCode);
        Assert.Equal("application/problem+json", other.Content.Headers.ContentType?.MediaType);
        Assert.Empty(await Service.EventsCorrelatedToAsync(correlationId));

        // The refusal did not take the key: the first order is still what it answers.
        using var again = await PostOrderAsync(body, key);
        Assert.Equal(HttpStatusCode.Accepted, again.StatusCode);
        Assert.Equal(placed.OrderId, (await again.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId);
    }

    [Fact]
    public async Task OrderRepeatingAProduct_IsRefusedNamingIt_SoNoLineLimitIsPassedLineByLine()
    {
        var correlationId = "repeat-" + Guid.NewGuid().ToString("N");

        using var repeated = await PostOrderAsync(
            new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 1000 }, new { sku = "mouse", quantity = 1 }, new { sku = "cable", quantity = 1000 } } },
            correlationId: correlationId);

        Assert.Equal(HttpStatusCode.BadRequest, repeated.StatusCode);
        using (var problem = JsonDocument.Parse(await repeated.Content.ReadAsStringAsync()))
        {
            var error = Assert.Single(problem.RootElement.GetProperty("errors").EnumerateObject());
            Assert.Equal("lines[2].sku", error.Name);
            Assert.Contains("'cable'", error.Value[0].GetString(), StringComparison.Ordinal);
        }

        Assert.Empty(await Service.EventsCorrelatedToAsync(correlationId));
    }

    [Fact]
    public async Task BadRequests_AreRefusedWithTheirReasons_AndStoreNothing()
    {
        var correlationId = "bad-" + Guid.NewGuid().ToString("N");

        using var invalid = await PostOrderAsync(
            new { customerId = "nobody", lines = new object[] { new { sku = "keyboard", quantity = 0 }, new { sku = "mouse", quantity = -3 }, new { sku = "unobtainium", quantity = 1 }, new { sku = "cable" } } },
            correlationId: correlationId);
        Assert.Equal(HttpStatusCode.BadRequest, invalid.StatusCode);
        using (var problem = JsonDocument.Parse(await invalid.Content.ReadAsStringAsync()))
        {
            var errors = problem.RootElement.GetProperty("errors").EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal).ToList();
            Assert.Equal(["customerId", "lines[0].quantity", "lines[1].quantity", "lines[2].sku", "lines[3].quantity"], errors);
        }

        using var empty = await PostOrderAsync(new { customerId = "ada", lines = Array.Empty<object>() }, correlationId: correlationId);
        Assert.Equal(HttpStatusCode.BadRequest, empty.StatusCode);

        using var malformed = await SendAsync("{\"customerId\": \"ada\", \"lines\": [", "application/json", correlationId);
        Assert.Equal(HttpStatusCode.BadRequest, malformed.StatusCode);
        Assert.Equal("application/problem+json", malformed.Content.Headers.ContentType?.MediaType);

        using var wrongType = await SendAsync("{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"keyboard\", \"quantity\": \"many\"}]}", "application/json", correlationId);
        Assert.Equal(HttpStatusCode.BadRequest, wrongType.StatusCode);

        // A property named twice: which customer was meant is ambiguous, so neither is taken.
        using var duplicate = await SendAsync(
            "{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": 1}], \"customerId\": \"bad-card\"}", "application/json", correlationId);
        Assert.Equal(HttpStatusCode.BadRequest, duplicate.StatusCode);
        Assert.Equal("application/problem+json", duplicate.Content.Headers.ContentType?.MediaType);

        using var notJson = await SendAsync("customerId=ada", "text/plain", correlationId);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, notJson.StatusCode);
        Assert.Equal("application/problem+json", notJson.Content.Headers.ContentType?.MediaType);

        using var tooLarge = await SendAsync("{\"customerId\": \"" + new string('a', 2 * 1024 * 1024) + "\"}", "application/json", correlationId);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLarge.StatusCode);

        // Nothing of any of them reached the store.
        Assert.Empty(await Service.EventsCorrelatedToAsync(correlationId));
    }

    [Fact]
    public async Task OddBodies_AreAnswered4xxProblems_NeverA500_AndStoreNothing()
    {
        var correlationId = "odd-" + Guid.NewGuid().ToString("N");
        using var placed = await PostOrderAsync(new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 1 } } });
        var id = (await placed.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId;
        var deep = new string('[', 200) + new string(']', 200);
        (string Path, byte[] Body, string? ContentType)[] requests =
        [
            ("/orders", Utf8("{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": 99999999999999999999}]}"), "application/json"),
            ("/orders", Utf8("{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": 1e3}]}"), "application/json"),
            ("/orders", Utf8("{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": 1.5}]}"), "application/json"),
            ("/orders", Utf8("{\"customerId\": \"ada\\u0000\", \"lines\": [{\"sku\": \"cable\\u0000\", \"quantity\": 1}]}"), "application/json"),
            ("/orders", Utf8("{\"customerId\": \"\\ud800\", \"lines\": [{\"sku\": \"cable\", \"quantity\": 1}]}"), "application/json"),
            ("/orders", Utf8("{\"customerId\": \"ada\"}"), "application/json"),
            ("/orders", Utf8("{\"customerId\": \"ada\", \"lines\": [null]}"), "application/json"),
            ("/orders", Utf8("null"), "application/json"),
            ("/orders", Utf8("[]"), "application/json"),
            ("/orders", Utf8(""), "application/json"),
            ("/orders", Utf8("{\"customerId\": \"ada\", \"lines\": " + deep + "}"), "application/json"),
            ("/orders", [0x7B, 0x22, 0xC3, 0x28, 0x22, 0x3A, 0x31, 0x7D], "application/json"),
            ("/orders", Utf8("{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": 1}]}"), "application/json; charset=utf-32"),
            ("/orders", Utf8("{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": 1}]}"), null),
            ($"/orders/{id}/cancel", Utf8("{\"reason\": \"\\udc00 changed my mind\"}"), "application/json"),
            ($"/orders/{id}/cancel", Utf8("{\"reason\": 42}"), "application/json"),
            ($"/orders/{id}/cancel", Utf8("{\"reason\": \"a\", \"reason\": \"b\"}"), "application/json"),
            ($"/orders/{id}/cancel", Utf8("\"changed my mind\""), "application/json"),
        ];

        var answers = new List<string>();
        foreach (var (path, body, contentType) in requests)
        {
            using var content = new ByteArrayContent(body);
            if (contentType is not null)
            {
                content.Headers.TryAddWithoutValidation("Content-Type", contentType);
            }

            using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = content };
            request.Headers.Add("X-Correlation-Id", correlationId);
            using var response = await Service.Http.SendAsync(request);
            var status = (int)response.StatusCode;
            if (status is < 400 or >= 500 || response.Content.Headers.ContentType?.MediaType != "application/problem+json")
            {
                var text = Encoding.UTF8.GetString(body);
                answers.Add($"{path} {text[..Math.Min(text.Length, 80)]} ({contentType}): {status} {response.Content.Headers.ContentType?.MediaType}");
            }
        }

        Assert.Empty(answers);
        Assert.Empty(await Service.EventsCorrelatedToAsync(correlationId));
    }

    private static byte[] Utf8(string text) => Encoding.UTF8.GetBytes(text);

    [Theory]
    // The web JSON defaults read "3" as 3: a client sending every number as a string was answered 202 and never learnt it.
    [InlineData("{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": \"3\"}]}", "$.lines[0].quantity", "must be a whole number.")]
    // A property the request does not have was dropped: a misspelt one was answered as if it had not been sent.
    [InlineData("{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": 1}], \"coupon\": \"FREE\"}", "$.coupon", "is not a member of this request.")]
    public async Task QuantityAsAStringOrAnUnknownProperty_IsAnswered400NamingIt_AndStoresNothing(string body, string field, string error)
    {
        var correlationId = "strict-json-" + Guid.NewGuid().ToString("N");
        using var response = await SendAsync(body, "application/json", correlationId);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using (var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync()))
        {
            Assert.Contains($" at {field} ", problem.RootElement.GetProperty("detail").GetString(), StringComparison.Ordinal);

            // Listed under the member as a validation error is, so a form shows it beside its field.
            var errors = problem.RootElement.GetProperty("errors");
            Assert.Equal([field[2..]], errors.EnumerateObject().Select(e => e.Name));
            Assert.Equal([error], errors.GetProperty(field[2..]).EnumerateArray().Select(e => e.GetString()));
        }

        Assert.Empty(await Service.EventsCorrelatedToAsync(correlationId));
    }

    [Fact]
    public async Task BadInput_IsAnsweredItsStatusAsAnRfc9457Problem_NeverA500_AndStoresNothing()
    {
        var correlationId = "bad-input-" + Guid.NewGuid().ToString("N");
        using var placed = await PostOrderAsync(new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 1 } } });
        var id = (await placed.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId;
        const string line = "{\"sku\": \"cable\", \"quantity\": 1}";
        const string valid = "{\"customerId\": \"ada\", \"lines\": [" + line + "]}";
        var longText = new string('x', 10_000);
        (string What, HttpMethod Method, string Path, string? Body, string? ContentType, string? Key, int Expected)[] cases =
        [
            ("malformed JSON", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [", "application/json", null, 400),
            ("empty JSON body", HttpMethod.Post, "/orders", "", "application/json", null, 400),
            ("no body at all", HttpMethod.Post, "/orders", null, null, null, 400),
            ("form content type", HttpMethod.Post, "/orders", "customerId=ada", "application/x-www-form-urlencoded", null, 415),
            ("text content type", HttpMethod.Post, "/orders", valid, "text/plain", null, 415),
            ("no customerId", HttpMethod.Post, "/orders", "{\"lines\": [" + line + "]}", "application/json", null, 400),
            ("no lines", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\"}", "application/json", null, 400),
            ("line without sku", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [{\"quantity\": 1}]}", "application/json", null, 400),
            ("line without quantity", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\"}]}", "application/json", null, 400),
            ("null customerId", HttpMethod.Post, "/orders", "{\"customerId\": null, \"lines\": [" + line + "]}", "application/json", null, 400),
            ("null lines", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": null}", "application/json", null, 400),
            ("null line", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [null]}", "application/json", null, 400),
            ("null sku", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [{\"sku\": null, \"quantity\": 1}]}", "application/json", null, 400),
            ("null quantity", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": null}]}", "application/json", null, 400),
            ("null body", HttpMethod.Post, "/orders", "null", "application/json", null, 400),
            ("zero quantity", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": 0}]}", "application/json", null, 400),
            ("negative quantity", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": -1}]}", "application/json", null, 400),
            ("quantity over the limit", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": 1001}]}", "application/json", null, 400),
            ("quantity over int", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": 2147483648}]}", "application/json", null, 400),
            ("quantity as a string", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": \"3\"}]}", "application/json", null, 400),
            ("quantity as a boolean", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": true}]}", "application/json", null, 400),
            ("customerId as a number", HttpMethod.Post, "/orders", "{\"customerId\": 42, \"lines\": [" + line + "]}", "application/json", null, 400),
            ("10,000-character customerId", HttpMethod.Post, "/orders", "{\"customerId\": \"" + longText + "\", \"lines\": [" + line + "]}", "application/json", null, 400),
            ("10,000-character sku", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"" + longText + "\", \"quantity\": 1}]}", "application/json", null, 400),
            ("51 lines", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [" + string.Join(", ", Enumerable.Range(0, 51).Select(i => $"{{\"sku\": \"s{i}\", \"quantity\": 1}}")) + "]}", "application/json", null, 400),
            ("duplicate property", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [" + line + "], \"customerId\": \"bad-card\"}", "application/json", null, 400),
            ("unknown property", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [" + line + "], \"coupon\": \"FREE\"}", "application/json", null, 400),
            ("unknown property of a line", HttpMethod.Post, "/orders", "{\"customerId\": \"ada\", \"lines\": [{\"sku\": \"cable\", \"quantity\": 1, \"price\": 0}]}", "application/json", null, 400),
            ("blank Idempotency-Key", HttpMethod.Post, "/orders", valid, "application/json", "", 400),
            ("256-character Idempotency-Key", HttpMethod.Post, "/orders", valid, "application/json", new string('k', 256), 400),
            ("cancel with an unknown property", HttpMethod.Post, $"/orders/{id}/cancel", "{\"reasn\": \"changed my mind\"}", "application/json", null, 400),
            ("cancel with a numeric reason", HttpMethod.Post, $"/orders/{id}/cancel", "{\"reason\": 42}", "application/json", null, 400),
            ("cancel of a non-GUID id", HttpMethod.Post, "/orders/42/cancel", null, null, null, 404),
            ("GET of a non-GUID id", HttpMethod.Get, "/orders/not-a-guid", null, null, null, 404),
            ("GET of the history of a non-GUID id", HttpMethod.Get, "/orders/not-a-guid/history", null, null, null, 404),
            ("GET of a page after a non-GUID", HttpMethod.Get, "/orders?after=42", null, null, null, 400),
            ("GET of a page size that is no number", HttpMethod.Get, "/orders?pageSize=ten", null, null, null, 400),
        ];

        var wrong = new List<string>();
        foreach (var (what, method, path, body, contentType, key, expected) in cases)
        {
            using var request = new HttpRequestMessage(method, path);
            if (body is not null)
            {
                request.Content = new ByteArrayContent(Utf8(body));
                request.Content.Headers.TryAddWithoutValidation("Content-Type", contentType);
            }

            request.Headers.Add("X-Correlation-Id", correlationId);
            if (key is not null)
            {
                request.Headers.TryAddWithoutValidation("Idempotency-Key", key);
            }

            using var response = await Service.Http.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            var problem = response.Content.Headers.ContentType?.MediaType == "application/problem+json" ? TryParse(text) : null;
            if ((int)response.StatusCode != expected
                || problem is not { } root
                || !root.TryGetProperty("status", out var status) || status.GetInt32() != expected
                || !root.TryGetProperty("title", out var title) || string.IsNullOrEmpty(title.GetString())
                || !root.TryGetProperty("detail", out var detail) || string.IsNullOrEmpty(detail.GetString()))
            {
                wrong.Add($"{what}: {(int)response.StatusCode} {response.Content.Headers.ContentType} {text[..Math.Min(text.Length, 200)]}");
            }
        }

        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
        Assert.Empty(await Service.EventsCorrelatedToAsync(correlationId));
    }

    private static JsonElement? TryParse(string json)
    {
        try
        {
            using var document = JsonDocument.Parse(json);
            return document.RootElement.Clone();
        }
        catch (JsonException)
        {
            return null;
        }
    }

    [Fact]
    public async Task CancelWithAnOversizedBody_Answers413_AndStoresNothing()
    {
        var correlationId = "cancel-large-" + Guid.NewGuid().ToString("N");
        using var placed = await PostOrderAsync(new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 1 } } });
        var id = (await placed.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId;

        // The reason would be stored in the order's stream and its read model: the body limit holds here as on POST /orders.
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/orders/{id}/cancel")
        {
            Content = new StringContent("{\"reason\": \"" + new string('r', 2 * 1024 * 1024) + "\"}", Encoding.UTF8, "application/json"),
        };
        request.Headers.Add("X-Correlation-Id", correlationId);
        using var tooLarge = await Service.Http.SendAsync(request);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLarge.StatusCode);
        Assert.Equal("application/problem+json", tooLarge.Content.Headers.ContentType?.MediaType);
        Assert.Empty(await Service.EventsCorrelatedToAsync(correlationId));

        // Without a body, a cancel is still read as before.
        using var noBody = await Service.Http.PostAsync($"/orders/{Guid.NewGuid()}/cancel", null);
        Assert.Equal(HttpStatusCode.NotFound, noBody.StatusCode);
    }

    [Fact]
    public async Task CancelReasonWithANulCharacterOrTooLong_Answers400_AndStoresNothing()
    {
        var correlationId = "cancel-reason-" + Guid.NewGuid().ToString("N");
        using var placed = await PostOrderAsync(new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 1 } } });
        var id = (await placed.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId;

        // Stored, a NUL would stop the read model on PostgreSQL (jsonb refuses it) for every order after this one.
        foreach (var reason in new[] { "changed my mind\u0000", new string('r', 501) })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, $"/orders/{id}/cancel") { Content = JsonContent.Create(new { reason }) };
            request.Headers.Add("X-Correlation-Id", correlationId);
            using var response = await Service.Http.SendAsync(request);

            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.True(problem.RootElement.GetProperty("errors").TryGetProperty("reason", out _));
        }

        Assert.Empty(await Service.EventsCorrelatedToAsync(correlationId));
    }

    [Fact]
    public async Task Orders_AreListedFromTheReadModel_ByCustomerAndStatus_InPages()
    {
        var ids = new List<Guid>();
        for (var i = 0; i < 3; i++)
        {
            using var response = await PostOrderAsync(new { customerId = "linus", lines = new[] { new { sku = "cable", quantity = 1 + i } } });
            Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
            ids.Add((await response.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId);
        }

        foreach (var id in ids)
        {
            await Service.WaitForFinalStateAsync(id);
        }

        var seen = new List<string>();
        string? next = "/orders?customerId=linus&status=Confirmed&pageSize=2";
        while (next is not null)
        {
            var page = (await Service.Http.GetFromJsonAsync<OrderPage>(next))!;
            Assert.True(page.Items.Count <= 2);
            Assert.All(page.Items, o => Assert.Equal(("linus", OrderStates.Confirmed), (o.CustomerId, o.Status)));
            seen.AddRange(page.Items.Select(o => o.Id));
            next = page.Next;
        }

        Assert.Superset(ids.Select(id => id.ToString()).ToHashSet(), seen.ToHashSet());
        Assert.Equal(seen.Count, seen.Distinct().Count());

        using var badPage = await Service.Http.GetAsync("/orders?pageSize=0");
        Assert.Equal(HttpStatusCode.BadRequest, badPage.StatusCode);

        // Not a number at all: said in the client's terms, not as the parameter's CLR type.
        using var wordPage = await Service.Http.GetAsync("/orders?pageSize=twenty");
        Assert.Equal(HttpStatusCode.BadRequest, wordPage.StatusCode);
        using var problem = JsonDocument.Parse(await wordPage.Content.ReadAsStringAsync());
        Assert.Equal("pageSize must be a whole number.", problem.RootElement.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task PageCursor_InAnotherSpellingOfTheId_PagesOnFromThatId_AndOneThatIsNoIdGets400()
    {
        for (var i = 0; i < 2; i++)
        {
            using var response = await PostOrderAsync(new { customerId = "alan", lines = new[] { new { sku = "mouse", quantity = 1 + i } } });
            Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
            await Service.WaitForOrderAsync((await response.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId, _ => true, "is in the read model");
        }

        var first = (await Service.Http.GetFromJsonAsync<OrderPage>("/orders?customerId=alan&pageSize=1"))!;
        var after = Guid.Parse(first.NextAfter!);
        var second = await PageIdsAsync(after.ToString());
        Assert.Single(second);
        Assert.NotEqual(first.Items[0].Id, second[0]);

        // An id is a GUID however it is spelled (as the order routes read it): compared as text, an upper-case cursor
        // repeated the page before, one in braces skipped orders, and one without hyphens ended the listing.
        foreach (var spelling in new[] { after.ToString().ToUpperInvariant(), after.ToString("B"), after.ToString("N") })
        {
            Assert.Equal(second, await PageIdsAsync(spelling));
        }

        // Not an id at all: refused, not answered with an empty (or wrong) page that reads as the end of the listing.
        using var notAnId = await Service.Http.GetAsync("/orders?customerId=alan&pageSize=1&after=zzz");
        Assert.Equal(HttpStatusCode.BadRequest, notAnId.StatusCode);
        Assert.Equal("application/problem+json", notAnId.Content.Headers.ContentType?.MediaType);
        using var problem = JsonDocument.Parse(await notAnId.Content.ReadAsStringAsync());
        Assert.StartsWith("after must be a GUID", problem.RootElement.GetProperty("detail").GetString(), StringComparison.Ordinal);

        async Task<List<string>> PageIdsAsync(string cursor)
        {
            using var response = await Service.Http.GetAsync($"/orders?customerId=alan&pageSize=1&after={Uri.EscapeDataString(cursor)}");
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"after={cursor}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
            return (await response.Content.ReadFromJsonAsync<OrderPage>())!.Items.Select(o => o.Id).ToList();
        }
    }

    [Fact]
    public async Task ReadEndpoints_AnswerHeadAsTheyAnswerGet_WithoutABody()
    {
        using var placed = await PostOrderAsync(new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 1 } } });
        var id = (await placed.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId;
        await Service.WaitForOrderAsync(id, _ => true, "is in the read model");

        // RFC 9110 §9.1: a server that answers GET answers HEAD (link checkers, caches and probes send it); 405 said it does not.
        foreach (var (path, expected) in new[]
        {
            ($"/orders/{id}", HttpStatusCode.OK),
            ($"/orders/{id}/history", HttpStatusCode.OK),
            ("/orders?pageSize=1", HttpStatusCode.OK),
            ($"/orders/{Guid.NewGuid()}", HttpStatusCode.NotFound),
            ("/orders?pageSize=0", HttpStatusCode.BadRequest),
            ("/stats/orders-per-status?from=yesterday", HttpStatusCode.BadRequest),
        })
        {
            using var request = new HttpRequestMessage(HttpMethod.Head, path);
            using var head = await Service.Http.SendAsync(request);
            Assert.True(head.StatusCode == expected, $"HEAD {path}: {(int)head.StatusCode}, expected {(int)expected}");
            Assert.Empty(await head.Content.ReadAsByteArrayAsync());
        }

        using var delete = await Service.Http.DeleteAsync($"/orders/{id}");
        Assert.Equal(HttpStatusCode.MethodNotAllowed, delete.StatusCode);
        Assert.Contains("HEAD", delete.Content.Headers.Allow);
    }

    [Fact]
    public async Task StatusesTheFrameworkAnswers_AreProblemsWithTitleStatusDetailAndTheCorrelationId()
    {
        var correlationId = "bare-" + Guid.NewGuid().ToString("N");
        foreach (var (method, path, content, expected) in new (HttpMethod, string, HttpContent?, HttpStatusCode)[]
        {
            (HttpMethod.Get, "/orders/not-a-guid", null, HttpStatusCode.NotFound),
            (HttpMethod.Delete, "/orders", null, HttpStatusCode.MethodNotAllowed),
            // curl -d '': an empty body sent as a form, refused by routing before the endpoint runs.
            (HttpMethod.Post, $"/orders/{Guid.NewGuid()}/cancel", new FormUrlEncodedContent([]), HttpStatusCode.UnsupportedMediaType),
        })
        {
            using var request = new HttpRequestMessage(method, path) { Content = content };
            request.Headers.Add("X-Correlation-Id", correlationId);
            using var response = await Service.Http.SendAsync(request);

            var what = $"{method} {path}";
            Assert.True(response.StatusCode == expected, $"{what}: {(int)response.StatusCode}");
            Assert.True(response.Content.Headers.ContentType?.MediaType == "application/problem+json", $"{what}: {response.Content.Headers.ContentType}");
            using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            var root = problem.RootElement;
            Assert.Equal((int)expected, root.GetProperty("status").GetInt32());
            Assert.False(string.IsNullOrEmpty(root.GetProperty("title").GetString()), $"{what}: a title");
            Assert.True(root.TryGetProperty("detail", out var detail) && !string.IsNullOrEmpty(detail.GetString()), $"{what}: a detail in {root}");
            Assert.Equal(correlationId, root.GetProperty("correlationId").GetString());
            if (expected == HttpStatusCode.MethodNotAllowed)
            {
                Assert.Contains("GET", response.Content.Headers.Allow);
                Assert.Contains("GET, HEAD, POST", detail.GetString(), StringComparison.Ordinal);
            }

            if (expected == HttpStatusCode.UnsupportedMediaType)
            {
                Assert.Contains("application/json", detail.GetString(), StringComparison.Ordinal);
            }
        }
    }

    [Fact]
    public async Task UnknownCustomerAndProducts_AreEchoedAtMost100Characters_NotAsLongAsTheClientSentThem()
    {
        var correlationId = "echo-" + Guid.NewGuid().ToString("N");
        var customer = new string('c', 200_000);
        var sku = new string('s', 200_000);
        using var response = await PostOrderAsync(new { customerId = customer, lines = new[] { new { sku, quantity = 1 }, new { sku, quantity = 1 } } }, correlationId: correlationId);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(text.Length < 4096, $"the problem reflects {text.Length} characters of the client's input");
        using var problem = JsonDocument.Parse(text);
        var errors = problem.RootElement.GetProperty("errors");
        Assert.Equal($"'{customer[..100]}…' is not a customer", errors.GetProperty("customerId")[0].GetString());
        Assert.Equal($"'{sku[..100]}…' is not a product", errors.GetProperty("lines[0].sku")[0].GetString());
        Assert.StartsWith($"'{sku[..100]}…' is already on lines[0]", errors.GetProperty("lines[1].sku")[0].GetString(), StringComparison.Ordinal);

        // What is short enough is quoted whole.
        using var unknown = await PostOrderAsync(new { customerId = "nobody", lines = new[] { new { sku = "nothing", quantity = 1 } } });
        using var whole = JsonDocument.Parse(await unknown.Content.ReadAsStringAsync());
        Assert.Equal("'nobody' is not a customer", whole.RootElement.GetProperty("errors").GetProperty("customerId")[0].GetString());
        Assert.Equal("'nothing' is not a product", whole.RootElement.GetProperty("errors").GetProperty("lines[0].sku")[0].GetString());
        Assert.Empty(await Service.EventsCorrelatedToAsync(correlationId));
    }

    [Fact]
    public async Task OrdersPerStatusPerMinute_CountEveryOrderEventOfTheLog_AndBadQueriesGet400()
    {
        using (var confirmed = await PostOrderAsync(new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 1 } } }))
        using (var declined = await PostOrderAsync(new { customerId = "bad-card", lines = new[] { new { sku = "cable", quantity = 1 } } }))
        {
            Assert.Equal(OrderStates.Confirmed, (await Service.WaitForFinalStateAsync((await confirmed.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId)).Status);
            Assert.Equal(OrderStates.Cancelled, (await Service.WaitForFinalStateAsync((await declined.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId)).Status);
        }

        // The stream catches up with the log: what it serves is what the event store holds, counted here.
        List<StatusCount>? served = null;
        List<StatusCount> stored = [];
        await Eventually.UntilAsync(
            async () =>
            {
                stored = await Service.OrderEventsPerStatusPerMinuteAsync();
                using var response = await Service.Http.GetAsync("/stats/orders-per-status");
                served = response.IsSuccessStatusCode ? await response.Content.ReadFromJsonAsync<List<StatusCount>>() : null;
                return served is not null && served.SequenceEqual(stored);
            },
            () => $"the stream serves the {stored.Sum(c => c.Count)} order events of the log per status and minute (served: {(served is null ? "nothing" : served.Sum(c => c.Count) + " in " + served.Count + " windows")})");
        Assert.True(stored.Where(c => c.Status == OrderStates.Placed).Sum(c => c.Count) >= 2, "both orders were counted as placed");
        Assert.Contains(stored, c => c.Status == OrderStates.Confirmed);
        Assert.Contains(stored, c => c.Status == OrderStates.Cancelled);

        // from and to select the windows that start in [from, to).
        var first = served![0];
        var window = await Service.Http.GetFromJsonAsync<List<StatusCount>>(
            $"/stats/orders-per-status?from={Uri.EscapeDataString(first.WindowStart.ToString("O"))}&to={Uri.EscapeDataString(first.WindowEnd.ToString("O"))}");
        Assert.Equal(served.Where(c => c.WindowStart == first.WindowStart), window!);

        using var notATime = await Service.Http.GetAsync("/stats/orders-per-status?from=yesterday");
        Assert.Equal(HttpStatusCode.BadRequest, notATime.StatusCode);
        Assert.Equal("application/problem+json", notATime.Content.Headers.ContentType?.MediaType);
        using (var problem = JsonDocument.Parse(await notATime.Content.ReadAsStringAsync()))
        {
            Assert.True(problem.RootElement.GetProperty("errors").TryGetProperty("from", out _));
        }

        using var backwards = await Service.Http.GetAsync("/stats/orders-per-status?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z");
        Assert.Equal(HttpStatusCode.BadRequest, backwards.StatusCode);
    }

    protected Task<HttpResponseMessage> PostOrderAsync(object body, string? idempotencyKey = null, string? correlationId = null) =>
        PostOrderAsync(Service, body, idempotencyKey, correlationId);

    protected static async Task<HttpResponseMessage> PostOrderAsync(ServiceInstance service, object body, string? idempotencyKey = null, string? correlationId = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/orders") { Content = JsonContent.Create(body) };
        if (idempotencyKey is not null)
        {
            request.Headers.Add("Idempotency-Key", idempotencyKey);
        }

        if (correlationId is not null)
        {
            request.Headers.Add("X-Correlation-Id", correlationId);
        }

        return await service.Http.SendAsync(request);
    }

    private async Task<HttpResponseMessage> SendAsync(string body, string contentType, string correlationId)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/orders") { Content = new StringContent(body, Encoding.UTF8, contentType) };
        request.Headers.Add("X-Correlation-Id", correlationId);
        return await Service.Http.SendAsync(request);
    }
}
