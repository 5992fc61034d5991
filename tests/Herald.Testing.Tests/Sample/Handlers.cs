using Herald.Handling;

namespace Herald.Testing.Tests.Sample;

/// <summary>Accepts an order and publishes that it was placed.</summary>
public sealed class PlaceOrderHandler : IMessageHandler<PlaceOrder>
{
    public ValueTask HandleAsync(PlaceOrder message, MessageContext context, CancellationToken cancellationToken) =>
        context.PublishAsync(new OrderPlaced(message.OrderId, message.Amount), cancellationToken: cancellationToken);
}

/// <summary>Charges a card through a gateway the test controls.</summary>
public sealed class ChargeCardHandler(CardGateway gateway) : IMessageHandler<ChargeCard>
{
    public ValueTask HandleAsync(ChargeCard message, MessageContext context, CancellationToken cancellationToken) =>
        gateway.ChargeAsync(message.OrderId, message.Amount, cancellationToken);
}

/// <summary>The card gateway: declines amounts over its limit, fails the first <see cref="Outages"/> calls, and may hold a call until released.</summary>
public sealed class CardGateway
{
    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _outages;
    private int _calls;

    public decimal Limit { get; init; } = 1000m;

    public int Outages
    {
        get => Volatile.Read(ref _outages);
        init => _outages = value;
    }

    public bool Holds { get; init; }

    public int Calls => Volatile.Read(ref _calls);

    /// <summary>Completes when the first call has reached the gateway.</summary>
    public Task Entered => _entered.Task;

    public void Release() => _released.TrySetResult();

    public async ValueTask ChargeAsync(Guid orderId, decimal amount, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _calls);
        _entered.TrySetResult();
        if (Holds)
        {
            await _released.Task.WaitAsync(cancellationToken);
        }

        if (Interlocked.Decrement(ref _outages) >= 0)
        {
            throw new TimeoutException("The card gateway did not answer.");
        }

        if (amount > Limit)
        {
            throw new InvalidOperationException($"Card declined for order {orderId}: {amount} is over the limit.");
        }
    }
}
