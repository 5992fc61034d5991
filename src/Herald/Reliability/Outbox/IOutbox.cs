using Herald.Persistence;
using Herald.Handling;

namespace Herald.Reliability.Outbox;

/// <summary>
/// Sends and publishes through the outbox of the current unit of work (scoped: resolve it from the message's or your
/// own scope): the messages are written with the unit of work's other writes and leave, through the relay, only once it
/// commits. Inside handlers, <see cref="MessageContext"/>'s send and publish use it when the outbox is on; elsewhere,
/// commit the scope's <see cref="IUnitOfWork"/> after your writes. Once that unit of work has committed or rolled back,
/// adding throws <see cref="InvalidOperationException"/>: the message would belong to no transaction.
/// </summary>
public interface IOutbox
{
    /// <summary>Adds a message for the queue it is routed to (by default this endpoint's own queue).</summary>
    ValueTask SendAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull;

    /// <summary>Adds an event for its topic (its logical type name).</summary>
    ValueTask PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull;
}
