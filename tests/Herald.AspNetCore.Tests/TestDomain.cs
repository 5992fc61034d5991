using System.Collections.Concurrent;
using Herald.Cqrs;
using Herald.Cqrs.Validation;
using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.Handling;
using Herald.Messages;

namespace Herald.AspNetCore.Tests;

[MessageType("http-test-order-placed")]
public sealed record OrderPlaced(string OrderId, int Quantity);

[MessageType("http-test-order-noted")]
public sealed record OrderNoted(string OrderId);

public sealed record PlaceOrder(string OrderId, int Quantity) : ICommand;

public enum LineColour
{
    Red,
    Blue,
}

public sealed record CartLine(string Sku, int Qty, LineColour? Colour = null, DateTimeOffset? At = null);

public sealed record Cart(string Id, CartLine[] Lines, Dictionary<string, int>? Tags = null);

public sealed class OrderRuleBrokenException(string message) : Exception(message);

public sealed class Order : Aggregate
{
    public void Place(string id, int quantity) => Raise(new OrderPlaced(id, quantity));

    protected override void When(object @event)
    {
        if (@event is OrderPlaced placed)
        {
            Id = placed.OrderId;
        }
    }
}

public sealed class PlaceOrderValidator : IValidator<PlaceOrder>
{
    public IEnumerable<ValidationError> Validate(PlaceOrder instance)
    {
        if (string.IsNullOrWhiteSpace(instance.OrderId))
        {
            yield return new ValidationError(nameof(PlaceOrder.OrderId), "is required");
        }

        if (instance.Quantity <= 0)
        {
            yield return new ValidationError(nameof(PlaceOrder.Quantity), "must be positive");
            yield return new ValidationError(nameof(PlaceOrder.Quantity), "must be between 1 and 100");
        }
    }
}

/// <summary>Places the order (its event stored through the repository) and publishes a note through the message bus.</summary>
public sealed class OrderCommands(AggregateRepository<Order> orders, IMessageBus bus) : ICommandHandler<PlaceOrder>
{
    public async ValueTask HandleAsync(PlaceOrder command, CancellationToken cancellationToken)
    {
        var order = await orders.LoadAsync(command.OrderId, cancellationToken);
        if (order.Version > 0)
        {
            throw new OrderRuleBrokenException($"Order {command.OrderId} was placed already.");
        }

        order.Place(command.OrderId, command.Quantity);
        await orders.SaveAsync(order, cancellationToken: cancellationToken);
        await bus.PublishAsync(new OrderNoted(command.OrderId), cancellationToken: cancellationToken);
    }
}

public sealed class NotedHandler(Observed observed) : IMessageHandler<OrderNoted>
{
    public ValueTask HandleAsync(OrderNoted message, MessageContext context, CancellationToken cancellationToken)
    {
        observed.Noted(message.OrderId, context.Envelope);
        return ValueTask.CompletedTask;
    }
}

/// <summary>What the test app saw: handler runs, and the envelopes of the notes its command handler published.</summary>
public sealed class Observed
{
    private readonly ConcurrentDictionary<string, TaskCompletionSource<Envelope>> _notes = new();
    private int _runs;

    public int Runs => Volatile.Read(ref _runs);

    public int Run() => Interlocked.Increment(ref _runs);

    public ConcurrentQueue<Guid?> Ids { get; } = new();

    public void Noted(string orderId, Envelope envelope) => Note(orderId).TrySetResult(envelope);

    public Task<Envelope> NoteAsync(string orderId) => Note(orderId).Task.WaitAsync(TimeSpan.FromSeconds(10));

    private TaskCompletionSource<Envelope> Note(string orderId) =>
        _notes.GetOrAdd(orderId, _ => new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously));

    public static async Task<List<RecordedEvent>> ReadAsync(IEventStore store, string orderId)
    {
        var events = new List<RecordedEvent>();
        await foreach (var recorded in store.ReadStreamAsync(StreamName.For("order", orderId)))
        {
            events.Add(recorded);
        }

        return events;
    }
}
