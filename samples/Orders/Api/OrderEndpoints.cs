using Herald.Cqrs;
using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.Projections;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Orders.Domain;
using Orders.ReadModel;

namespace Orders.Api;

/// <summary>The HTTP API: commands through the command bus (one unit of work each), reads from the projected read model.</summary>
public static class OrderEndpoints
{
    public const int MaxPageSize = 100;

    /// <summary>How long a read of an order placed but not yet projected waits for the read model before answering 503.</summary>
    public static readonly TimeSpan ReadModelWait = TimeSpan.FromSeconds(5);

    /// <summary>The key of the clock that times <see cref="ReadModelWait"/>: the host's <see cref="TimeProvider"/>, which a test replaces.</summary>
    public const string ReadModelWaitClock = "orders-read-model-wait";

    public static IEndpointRouteBuilder MapOrderEndpoints(this IEndpointRouteBuilder app)
    {
        app.MapPost("/orders", PlaceAsync).AcceptsJson<PlaceOrderRequest>().WithIdempotencyKey();
        app.MapPost("/orders/{id:guid}/cancel", CancelAsync).AcceptsJson<CancelOrderRequest>().WithIdempotencyKey();
        app.MapGetAndHead("/orders/{id:guid}", GetAsync);
        app.MapGetAndHead("/orders", ListAsync);
        app.MapGetAndHead("/orders/{id:guid}/history", HistoryAsync);
        return app;
    }

    // RFC 9110 §9.1: a server that answers GET answers HEAD too (caches, link checkers and probes send it); MapGet alone
    // answered it 405. The server sends the headers and drops the body.
    internal static RouteHandlerBuilder MapGetAndHead(this IEndpointRouteBuilder app, string pattern, Delegate handler) =>
        app.MapMethods(pattern, [HttpMethods.Get, HttpMethods.Head], handler);

    private static async Task<IResult> PlaceAsync(PlaceOrderRequest? request, HttpContext http, ICommandBus commands, CancellationToken cancellationToken)
    {
        // With an Idempotency-Key, the order's id is derived from it: a retry whose first attempt placed the order but died
        // before its response was stored (so the key was freed) finds that order instead of placing a second one.
        // Without a key, a new id per request.
        var command = new PlaceOrder(
            http.GetIdempotentId() ?? Guid.CreateVersion7(),
            request?.CustomerId,
            request?.Lines?.Select(l => l is null ? null! : new OrderItem(l.Sku, l.Quantity)).ToList());
        var accepted = await commands.SendAsync(command, http.GetEventMetadata(), cancellationToken);
        return Results.Accepted(
            OrderLink(http.Request, accepted.OrderId),
            new PlaceOrderResponse(accepted.OrderId, OrderStates.Placed, accepted.CustomerId, accepted.Total, http.GetCorrelationId()));
    }

    private static async Task<IResult> CancelAsync(Guid id, CancelOrderRequest? request, HttpContext http, ICommandBus commands, CancellationToken cancellationToken)
    {
        await commands.SendAsync(new CancelOrder(id, request?.Reason is { Length: > 0 } reason ? reason : "cancelled by the customer"), http.GetEventMetadata(), cancellationToken);
        return Results.Accepted(OrderLink(http.Request, id), new { orderId = id, status = OrderStates.Cancelled });
    }

    private static async Task<IResult> GetAsync(
        Guid id,
        ReadModels readModels,
        IEventStore store,
        ProjectionManager projections,
        [FromKeyedServices(ReadModelWaitClock)] TimeProvider clock,
        HttpContext http,
        CancellationToken cancellationToken)
    {
        if (await readModels.GetAsync(OrderProjection.Orders, id.ToString(), cancellationToken) is { } order)
        {
            return Results.Ok(order);
        }

        // The POST answered 202 once the order's events committed; the read model follows them a moment later. So the link
        // it gave does not answer 404 for an order that exists: the first event (which makes the document) is waited for.
        var stream = http.RequestServices.GetRequiredService<AggregateRepository<Order>>().StreamNameFor(id.ToString());
        long? placedAt = null;
        await foreach (var first in store.ReadStreamAsync(stream, maxCount: 1, cancellationToken: cancellationToken))
        {
            placedAt = first.Position;
        }

        if (placedAt is not { } position)
        {
            return NotFound(id);
        }

        using var timeout = new CancellationTokenSource(ReadModelWait, clock);
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        try
        {
            await projections.WaitForPositionAsync(OrderProjection.ProjectionName, position, wait.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            http.Response.Headers.RetryAfter = "1";
            return Results.Problem(
                statusCode: StatusCodes.Status503ServiceUnavailable,
                title: "Order not readable yet",
                detail: $"Order {id} is placed, but the read model has not caught up with it yet; retry after the Retry-After delay.");
        }

        return await readModels.GetAsync(OrderProjection.Orders, id.ToString(), cancellationToken) is { } projected ? Results.Ok(projected) : NotFound(id);
    }

    // The cursor is an order id, read as a GUID like the routes' ids: compared as text, an id spelled otherwise (upper case, in
    // braces, without hyphens) paged from the wrong place, and a cursor that is no id answered an empty page, read as the end.
    private static async Task<IResult> ListAsync(string? status, string? customerId, int? pageSize, Guid? after, HttpRequest request, ReadModels readModels, CancellationToken cancellationToken)
    {
        if (pageSize is < 1 or > MaxPageSize)
        {
            return Results.ValidationProblem(
                new Dictionary<string, string[]> { ["pageSize"] = [$"must be between 1 and {MaxPageSize}, not {pageSize}"] },
                title: "The query is not valid");
        }

        var where = new Dictionary<string, string>(StringComparer.Ordinal);
        if (!string.IsNullOrEmpty(status))
        {
            where["status"] = status;
        }

        if (!string.IsNullOrEmpty(customerId))
        {
            where["customerId"] = customerId;
        }

        var limit = pageSize ?? 20;
        var page = await readModels.QueryAsync(OrderProjection.Orders, new ReadModelQuery { Where = where, Limit = limit, AfterId = after?.ToString() }, cancellationToken);
        var next = page.NextAfterId is { } nextId ? NextLink(request, status, customerId, limit, nextId) : null;
        return Results.Ok(new OrderPage(page.Items, page.NextAfterId, next));
    }

    private static async Task<IResult> HistoryAsync(Guid id, IEventStore store, HttpContext http, CancellationToken cancellationToken)
    {
        var stream = http.RequestServices.GetRequiredService<AggregateRepository<Order>>().StreamNameFor(id.ToString());
        var events = new List<HistoryEntry>();
        await foreach (var recorded in store.ReadStreamAsync(stream, cancellationToken: cancellationToken))
        {
            var envelope = recorded.Envelope;
            events.Add(new HistoryEntry(
                recorded.EventType,
                recorded.Version,
                recorded.Position,
                recorded.RecordedAt,
                recorded.EventId,
                envelope.CorrelationId,
                envelope.CausationId,
                envelope.Headers.TryGetValue("traceparent", out var trace) ? trace : null,
                System.Text.Json.JsonSerializer.Deserialize<System.Text.Json.JsonElement>(envelope.Body.Span)));
        }

        return events.Count > 0 ? Results.Ok(new OrderHistory(id, stream, events)) : NotFound(id);
    }

    private static IResult NotFound(Guid id) =>
        Results.Problem(statusCode: StatusCodes.Status404NotFound, title: "Order not found", detail: $"There is no order {id}.");

    // Links start with the request's path base: under UsePathBase (an app behind a proxy forwarding a prefix), a link
    // without it points outside the app.
    private static string OrderLink(HttpRequest request, Guid id) => request.PathBase + "/orders/" + id.ToString();

    // The link to the next page keeps the filters.
    private static string NextLink(HttpRequest request, string? status, string? customerId, int pageSize, string after)
    {
        var query = QueryString.Empty;
        if (!string.IsNullOrEmpty(status))
        {
            query = query.Add("status", status);
        }

        if (!string.IsNullOrEmpty(customerId))
        {
            query = query.Add("customerId", customerId);
        }

        return request.PathBase + "/orders" + query.Add("pageSize", pageSize.ToString(System.Globalization.CultureInfo.InvariantCulture)).Add("after", after);
    }
}

/// <summary>The body of <c>POST /orders</c>.</summary>
public sealed record PlaceOrderRequest(string? CustomerId, IReadOnlyList<OrderLineRequest?>? Lines);

/// <summary>One requested line.</summary>
public sealed record OrderLineRequest(string? Sku, int? Quantity);

/// <summary>The body of <c>POST /orders/{id}/cancel</c> (optional).</summary>
public sealed record CancelOrderRequest(string? Reason);

/// <summary>The answer to an accepted order: where to follow it.</summary>
public sealed record PlaceOrderResponse(Guid OrderId, string Status, string CustomerId, decimal Total, string CorrelationId);

/// <summary>One page of orders; <c>Next</c> is the link to the next page, null on the last.</summary>
public sealed record OrderPage(IReadOnlyList<OrderView> Items, string? NextAfter, string? Next);

/// <summary>An order's stream, event by event.</summary>
public sealed record OrderHistory(Guid OrderId, string Stream, IReadOnlyList<HistoryEntry> Events);

/// <summary>One stored event with its metadata.</summary>
public sealed record HistoryEntry(
    string Type,
    long Version,
    long Position,
    DateTimeOffset Time,
    Guid EventId,
    string? CorrelationId,
    string? CausationId,
    string? TraceParent,
    System.Text.Json.JsonElement Data);
