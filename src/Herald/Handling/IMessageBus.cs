namespace Herald.Handling;

/// <summary>
/// Sends and publishes messages through the configured transport. Inside a handler or a command's unit of work it sends
/// as the handler's <see cref="MessageContext"/> does: following the handled message, and through the unit of work's
/// outbox when the outbox is on, so the message leaves only if the unit of work commits.
/// </summary>
public interface IMessageBus
{
    /// <summary>Publishes an event to its topic (its logical type name); every subscribed endpoint gets a copy.</summary>
    ValueTask PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull;

    /// <summary>Sends a message to the one queue it is routed to (by default this endpoint's own queue).</summary>
    ValueTask SendAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull;
}
