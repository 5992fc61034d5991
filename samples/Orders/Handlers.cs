using Herald.Cqrs;
using Herald.Cqrs.Validation;
using Herald.Handling;
using Microsoft.Extensions.Logging;

namespace Orders;

/// <summary>Handles PlaceOrder: checks it, then publishes OrderPlaced.</summary>
public sealed class PlaceOrderHandler(IMessageBus bus, ILogger<PlaceOrderHandler> logger) : ICommandHandler<PlaceOrder, Guid>
{
    public async ValueTask<Guid> HandleAsync(PlaceOrder command, CancellationToken cancellationToken)
    {
        var orderId = Guid.CreateVersion7();
        var total = command.Quantity * command.UnitPrice;
        logger.LogInformation("command  PlaceOrder -> order {OrderId} for {Customer}: {Quantity} x {Sku} = {Total}", orderId, command.CustomerId, command.Quantity, command.Sku, total);
        await bus.PublishAsync(
            new OrderPlaced(orderId, command.CustomerId, command.Sku, command.Quantity, total),
            new DeliveryOptions { PartitionKey = orderId.ToString(), UserId = command.CustomerId },
            cancellationToken);
        return orderId;
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

        if (instance.Quantity <= 0)
        {
            yield return new ValidationError(nameof(PlaceOrder.Quantity), "must be at least 1");
        }

        if (instance.UnitPrice < 0)
        {
            yield return new ValidationError(nameof(PlaceOrder.UnitPrice), "must not be negative");
        }
    }
}

/// <summary>Projection: keeps the order summaries up to date.</summary>
public sealed class OrderSummaryProjection(OrderSummaries summaries, ILogger<OrderSummaryProjection> logger)
    : IMessageHandler<OrderPlaced>, IMessageHandler<OrderConfirmed>
{
    public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
    {
        summaries.Upsert(message.OrderId, _ => new OrderSummary(message.OrderId, message.CustomerId, message.Total, "placed"));
        logger.LogInformation("project  order-placed    {OrderId} -> status placed (attempt {Attempt})", message.OrderId, context.Envelope.DeliveryAttempt);
        return ValueTask.CompletedTask;
    }

    public ValueTask HandleAsync(OrderConfirmed message, MessageContext context, CancellationToken cancellationToken)
    {
        summaries.Upsert(message.OrderId, existing => existing! with { Status = "confirmed" });
        logger.LogInformation("project  order-confirmed {OrderId} -> status confirmed", message.OrderId);
        return ValueTask.CompletedTask;
    }
}

/// <summary>Fulfillment: on OrderPlaced, asks the warehouse for stock; when reserved, confirms the order.</summary>
public sealed class Fulfillment(ILogger<Fulfillment> logger) : IMessageHandler<OrderPlaced>, IMessageHandler<StockReserved>
{
    public async ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
    {
        logger.LogInformation("fulfil   order-placed    {OrderId} -> send reserve-stock (correlation {Correlation})", message.OrderId, context.Envelope.CorrelationId);
        await context.SendAsync(new ReserveStock(message.OrderId, message.Sku, message.Quantity), cancellationToken: cancellationToken);
    }

    public async ValueTask HandleAsync(StockReserved message, MessageContext context, CancellationToken cancellationToken)
    {
        logger.LogInformation("fulfil   stock-reserved  {OrderId} -> publish order-confirmed", message.OrderId);
        await context.PublishAsync(new OrderConfirmed(message.OrderId), cancellationToken: cancellationToken);
    }
}

/// <summary>The warehouse: reserves stock. The first attempt for a large order fails once, to show a redelivery.</summary>
public sealed class Warehouse(ILogger<Warehouse> logger) : IMessageHandler<ReserveStock>
{
    public async ValueTask HandleAsync(ReserveStock message, MessageContext context, CancellationToken cancellationToken)
    {
        if (message.Quantity >= 10 && context.Envelope.DeliveryAttempt == 1)
        {
            logger.LogInformation("stock    reserve-stock   {OrderId} -> scanner busy, failing attempt 1 (it will be redelivered)", message.OrderId);
            throw new InvalidOperationException("The warehouse scanner is busy.");
        }

        logger.LogInformation("stock    reserve-stock   {OrderId} -> {Quantity} x {Sku} reserved (attempt {Attempt})", message.OrderId, message.Quantity, message.Sku, context.Envelope.DeliveryAttempt);
        await context.PublishAsync(new StockReserved(message.OrderId), cancellationToken: cancellationToken);
    }
}

/// <summary>Answers GetOrderSummary from the read model.</summary>
public sealed class GetOrderSummaryHandler(OrderSummaries summaries) : IQueryHandler<GetOrderSummary, OrderSummary?>
{
    public ValueTask<OrderSummary?> HandleAsync(GetOrderSummary query, CancellationToken cancellationToken) =>
        ValueTask.FromResult(summaries.Get(query.OrderId));
}
