using Herald.Cqrs;
using Herald.Cqrs.Validation;
using Herald.EventSourcing.Aggregates;
using Herald.Handling;
using Microsoft.Extensions.Logging;
using Orders.Domain;

namespace Orders;

/// <summary>The order commands: load the aggregate, apply the change, save it with its loaded version (optimistic concurrency).</summary>
public sealed class OrderCommands(AggregateRepository<Order> orders, ILogger<OrderCommands> logger)
    : ICommandHandler<PlaceOrder, Guid>, ICommandHandler<ConfirmOrder>, ICommandHandler<CancelOrder>, ICommandHandler<ShipOrder>, ICommandHandler<DeliverOrder>
{
    public async ValueTask<Guid> HandleAsync(PlaceOrder command, CancellationToken cancellationToken)
    {
        var id = Guid.CreateVersion7();
        var order = await orders.LoadAsync(id.ToString(), cancellationToken);
        order.Place(command.CustomerId, command.Lines);
        var version = await orders.SaveAsync(order, cancellationToken: cancellationToken);
        logger.LogInformation("command  place-order     {OrderId} for {Customer}: {Lines} line(s), {Total:0.00} -> version {Version}", id, command.CustomerId, command.Lines.Count, order.Total, version);
        return id;
    }

    public ValueTask HandleAsync(ConfirmOrder command, CancellationToken cancellationToken) =>
        ChangeAsync(command.OrderId, o => o.Confirm(), "confirm-order", cancellationToken);

    public ValueTask HandleAsync(CancelOrder command, CancellationToken cancellationToken) =>
        ChangeAsync(command.OrderId, o => o.Cancel(command.Reason), "cancel-order", cancellationToken);

    public ValueTask HandleAsync(ShipOrder command, CancellationToken cancellationToken) =>
        ChangeAsync(command.OrderId, o => o.Ship(command.TrackingNumber), "ship-order", cancellationToken);

    public ValueTask HandleAsync(DeliverOrder command, CancellationToken cancellationToken) =>
        ChangeAsync(command.OrderId, o => o.Deliver(), "deliver-order", cancellationToken);

    private async ValueTask ChangeAsync(Guid id, Action<Order> change, string what, CancellationToken cancellationToken)
    {
        var order = await orders.LoadAsync(id.ToString(), cancellationToken);
        change(order);
        var version = await orders.SaveAsync(order, cancellationToken: cancellationToken);
        logger.LogInformation("command  {Command,-15} {OrderId} -> version {Version}", what, id, version);
    }
}

/// <summary>Rejects orders that cannot be right, listing every problem at once.</summary>
public sealed class PlaceOrderValidator : IValidator<PlaceOrder>
{
    public IEnumerable<ValidationError> Validate(PlaceOrder instance)
    {
        if (string.IsNullOrWhiteSpace(instance.CustomerId))
        {
            yield return new ValidationError(nameof(PlaceOrder.CustomerId), "is required");
        }

        if (instance.Lines.Count == 0)
        {
            yield return new ValidationError(nameof(PlaceOrder.Lines), "must have at least one line");
        }

        foreach (var line in instance.Lines.Where(l => l.Quantity <= 0))
        {
            yield return new ValidationError(nameof(PlaceOrder.Lines), $"quantity of '{line.Sku}' must be at least 1");
        }
    }
}

/// <summary>Projection: keeps the order summaries up to date from the published order events.</summary>
public sealed class OrderSummaryProjection(OrderSummaries summaries, ILogger<OrderSummaryProjection> logger)
    : IMessageHandler<OrderPlaced>, IMessageHandler<OrderConfirmed>, IMessageHandler<OrderCancelled>, IMessageHandler<OrderShipped>, IMessageHandler<OrderDelivered>
{
    public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken) =>
        Set(message.OrderId, _ => new OrderSummary(message.OrderId, message.CustomerId, message.Total, "placed"));

    public ValueTask HandleAsync(OrderConfirmed message, MessageContext context, CancellationToken cancellationToken) =>
        Set(message.OrderId, s => s! with { Status = "confirmed" });

    public ValueTask HandleAsync(OrderCancelled message, MessageContext context, CancellationToken cancellationToken) =>
        Set(message.OrderId, s => s! with { Status = "cancelled", Detail = message.Reason });

    public ValueTask HandleAsync(OrderShipped message, MessageContext context, CancellationToken cancellationToken) =>
        Set(message.OrderId, s => s! with { Status = "shipped", Detail = message.TrackingNumber });

    public ValueTask HandleAsync(OrderDelivered message, MessageContext context, CancellationToken cancellationToken) =>
        Set(message.OrderId, s => s! with { Status = "delivered" });

    private ValueTask Set(Guid id, Func<OrderSummary?, OrderSummary> change)
    {
        summaries.Upsert(id, change);
        logger.LogInformation("project  {OrderId} -> {Status}", id, summaries.Get(id)!.Status);
        return ValueTask.CompletedTask;
    }
}

/// <summary>
/// Fulfillment (choreography for now; the saga issue turns it into an orchestrated saga): reserve stock for a placed
/// order, confirm or cancel it on the warehouse's answer, then ship and deliver it.
/// </summary>
public sealed class Fulfillment(ICommandBus commands, ILogger<Fulfillment> logger)
    : IMessageHandler<OrderPlaced>, IMessageHandler<StockReserved>, IMessageHandler<StockUnavailable>, IMessageHandler<OrderConfirmed>, IMessageHandler<OrderShipped>
{
    public async ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
    {
        logger.LogInformation("fulfil   order-placed    {OrderId} -> send reserve-stock", message.OrderId);
        await context.SendAsync(new ReserveStock(message.OrderId, message.Lines), cancellationToken: cancellationToken);
    }

    public ValueTask HandleAsync(StockReserved message, MessageContext context, CancellationToken cancellationToken) =>
        commands.SendAsync(new ConfirmOrder(message.OrderId), cancellationToken);

    public ValueTask HandleAsync(StockUnavailable message, MessageContext context, CancellationToken cancellationToken) =>
        commands.SendAsync(new CancelOrder(message.OrderId, $"{message.Sku} is out of stock"), cancellationToken);

    public ValueTask HandleAsync(OrderConfirmed message, MessageContext context, CancellationToken cancellationToken) =>
        commands.SendAsync(new ShipOrder(message.OrderId, "TRK-" + message.OrderId.ToString("N")[^8..].ToUpperInvariant()), cancellationToken);

    public ValueTask HandleAsync(OrderShipped message, MessageContext context, CancellationToken cancellationToken) =>
        commands.SendAsync(new DeliverOrder(message.OrderId), cancellationToken);
}

/// <summary>The warehouse: reserves stock. The scanner fails the first attempt for large orders, to show a redelivery.</summary>
public sealed class Warehouse(ILogger<Warehouse> logger) : IMessageHandler<ReserveStock>
{
    public async ValueTask HandleAsync(ReserveStock message, MessageContext context, CancellationToken cancellationToken)
    {
        if (message.Lines.FirstOrDefault(l => l.Sku == "unobtainium") is { } missing)
        {
            logger.LogInformation("stock    reserve-stock   {OrderId} -> {Sku} unavailable", message.OrderId, missing.Sku);
            await context.PublishAsync(new StockUnavailable(message.OrderId, missing.Sku), cancellationToken: cancellationToken);
            return;
        }

        if (message.Lines.Sum(l => l.Quantity) >= 10 && context.Envelope.DeliveryAttempt == 1)
        {
            logger.LogInformation("stock    reserve-stock   {OrderId} -> scanner busy, failing attempt 1 (it will be redelivered)", message.OrderId);
            throw new InvalidOperationException("The warehouse scanner is busy.");
        }

        logger.LogInformation("stock    reserve-stock   {OrderId} -> reserved (attempt {Attempt})", message.OrderId, context.Envelope.DeliveryAttempt);
        await context.PublishAsync(new StockReserved(message.OrderId), cancellationToken: cancellationToken);
    }
}

/// <summary>Answers GetOrderSummary from the read model.</summary>
public sealed class GetOrderSummaryHandler(OrderSummaries summaries) : IQueryHandler<GetOrderSummary, OrderSummary?>
{
    public ValueTask<OrderSummary?> HandleAsync(GetOrderSummary query, CancellationToken cancellationToken) =>
        ValueTask.FromResult(summaries.Get(query.OrderId));
}
