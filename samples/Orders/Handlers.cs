using Herald.Cqrs;
using Herald.Cqrs.Validation;
using Herald.EventSourcing.Aggregates;
using Orders.Domain;

namespace Orders;

/// <summary>
/// The order commands: load the aggregate, apply the change, save it with its loaded version. The command bus commits the
/// unit of work when the handler returns, so a conflict (the stream moved on) surfaces there and nothing is stored.
/// </summary>
public sealed class OrderCommands(AggregateRepository<Order> orders) : ICommandHandler<PlaceOrder, OrderAccepted>, ICommandHandler<CancelOrder>
{
    public async ValueTask<OrderAccepted> HandleAsync(PlaceOrder command, CancellationToken cancellationToken)
    {
        // The validator ran before: every product is known and every quantity positive.
        var lines = command.Items!
            .Select(i => Catalog.FindProduct(i.Sku!)!)
            .Zip(command.Items!, (product, item) => new OrderLine(product.Sku, item.Quantity!.Value, product.Price))
            .ToList();
        var order = await orders.LoadAsync(command.OrderId.ToString(), cancellationToken);
        if (order.Version > 0)
        {
            // Placed already by an earlier attempt of the same Idempotency-Key (its response lost in a crash, or expired): the
            // same answer. Another order under that key is refused, as a reused key is while its response is kept: answered
            // as placed, it would be lost without the client knowing.
            if (order.CustomerId != command.CustomerId
                || !order.Lines.Select(l => (l.Sku, l.Quantity)).SequenceEqual(lines.Select(l => (l.Sku, l.Quantity))))
            {
                throw new IdempotencyKeyReusedException();
            }

            return new OrderAccepted(command.OrderId, order.CustomerId, order.Total);
        }

        order.Place(command.CustomerId!, lines);
        await orders.SaveAsync(order, cancellationToken: cancellationToken);
        return new OrderAccepted(command.OrderId, order.CustomerId, order.Total);
    }

    public async ValueTask HandleAsync(CancelOrder command, CancellationToken cancellationToken)
    {
        var order = await orders.LoadAsync(command.OrderId.ToString(), cancellationToken);
        if (order.Version == 0)
        {
            throw new OrderNotFoundException(command.OrderId);
        }

        order.Cancel(command.Reason, byCompensation: false);
        await orders.SaveAsync(order, cancellationToken: cancellationToken);
    }
}

/// <summary>The request's Idempotency-Key placed another order already (HTTP 422); nothing is stored.</summary>
public sealed class IdempotencyKeyReusedException() : InvalidOperationException("This Idempotency-Key placed another order already; use a new key for a new order.");

/// <summary>No order has this id (HTTP 404).</summary>
public sealed class OrderNotFoundException(Guid orderId) : InvalidOperationException($"There is no order {orderId}.");

/// <summary>Rejects orders that cannot be right, listing every problem at once (HTTP 400), before anything is stored.</summary>
public sealed class PlaceOrderValidator : IValidator<PlaceOrder>
{
    public const int MaxLines = 50;
    public const int MaxQuantity = 1000;
    public const int MaxQuotedLength = 100;

    public IEnumerable<ValidationError> Validate(PlaceOrder instance)
    {
        if (string.IsNullOrWhiteSpace(instance.CustomerId))
        {
            yield return new ValidationError("customerId", "is required");
        }
        else if (Catalog.FindCustomer(instance.CustomerId) is null)
        {
            yield return new ValidationError("customerId", $"{Quote(instance.CustomerId)} is not a customer");
        }

        if (instance.Items is null || instance.Items.Count == 0)
        {
            yield return new ValidationError("lines", "must have at least one line");
            yield break;
        }

        if (instance.Items.Count > MaxLines)
        {
            yield return new ValidationError("lines", $"must have at most {MaxLines} lines");
        }

        // The quantity limit is per product: a product repeated over several lines would pass it line by line.
        var lineOfSku = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < instance.Items.Count; i++)
        {
            var item = instance.Items[i];
            if (item is null)
            {
                yield return new ValidationError($"lines[{i}]", "is required");
                continue;
            }

            if (string.IsNullOrWhiteSpace(item.Sku))
            {
                yield return new ValidationError($"lines[{i}].sku", "is required");
            }
            else if (!lineOfSku.TryAdd(item.Sku, i))
            {
                yield return new ValidationError($"lines[{i}].sku", $"{Quote(item.Sku)} is already on lines[{lineOfSku[item.Sku]}]; put its whole quantity on one line");
            }
            else if (Catalog.FindProduct(item.Sku) is null)
            {
                yield return new ValidationError($"lines[{i}].sku", $"{Quote(item.Sku)} is not a product");
            }

            switch (item.Quantity)
            {
                case null:
                    yield return new ValidationError($"lines[{i}].quantity", "is required");
                    break;
                case <= 0:
                    yield return new ValidationError($"lines[{i}].quantity", $"must be at least 1, not {item.Quantity}");
                    break;
                case > MaxQuantity:
                    yield return new ValidationError($"lines[{i}].quantity", $"must be at most {MaxQuantity}, not {item.Quantity}");
                    break;
            }
        }
    }

    // The client's own value, quoted in the problem: cut, or a client could have a megabyte of its input reflected back.
    private static string Quote(string value)
    {
        if (value.Length <= MaxQuotedLength)
        {
            return $"'{value}'";
        }

        var length = char.IsHighSurrogate(value[MaxQuotedLength - 1]) ? MaxQuotedLength - 1 : MaxQuotedLength;
        return $"'{value.AsSpan(0, length)}…'";
    }
}

/// <summary>
/// Rejects a cancellation reason that cannot be stored everywhere it goes (HTTP 400), before anything is stored: the
/// reason lands in the order's read model, and PostgreSQL's jsonb refuses a NUL character, so one such reason would stop
/// the projection for every order after it.
/// </summary>
public sealed class CancelOrderValidator : IValidator<CancelOrder>
{
    public const int MaxReasonLength = 500;

    public IEnumerable<ValidationError> Validate(CancelOrder instance)
    {
        if (instance.Reason.Length > MaxReasonLength)
        {
            yield return new ValidationError("reason", $"must be at most {MaxReasonLength} characters, not {instance.Reason.Length}");
        }

        if (instance.Reason.Any(char.IsControl))
        {
            yield return new ValidationError("reason", "may not hold control characters");
        }
    }
}
