namespace Herald.Handling;

/// <summary>Sends and publishes messages through the configured transport.</summary>
public interface IMessageBus
{
    /// <summary>Publishes an event to its topic (its logical type name); every subscribed endpoint gets a copy.</summary>
    ValueTask PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull;

    /// <summary>Sends a message to the one queue it is routed to (by default this endpoint's own queue).</summary>
    ValueTask SendAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull;
}
