using Herald.Internal;
using Herald.Persistence;
using System.Diagnostics;
using Herald.Diagnostics;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.Options;

namespace Herald.Reliability.Outbox;

/// <summary>The scoped outbox: turns messages into envelopes and adds them to the store in the scope's unit of work.</summary>
internal sealed class Outbox(
    EnvelopeFactory envelopes,
    MessageRoutes routes,
    IOptions<HeraldOptions> heraldOptions,
    IOutboxStore store,
    IUnitOfWork unitOfWork,
    OutboxSignal signal,
    ITransport transport,
    TimeProvider timeProvider) : IOutbox
{
    public ValueTask SendAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull =>
        AddAsync(message, OutboxDestinationKind.Queue, routes.SendDestination(message.GetType(), options, heraldOptions.Value.EndpointName), options, cancellationToken);

    public ValueTask PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull
    {
        MessageRoutes.RefuseDestination(message.GetType(), options);
        return AddAsync(message, OutboxDestinationKind.Topic, destination: null, options, cancellationToken);
    }

    private async ValueTask AddAsync(object message, OutboxDestinationKind kind, string? destination, DeliveryOptions? delivery, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);

        // Its transaction has ended: written at once, the message would leave although that transaction rolled back (or is
        // rolling back in a failing commit), and never atomically with what it belonged to. An enlisting store refuses alike.
        if (unitOfWork.IsCompleted)
        {
            throw new InvalidOperationException(
                "The outbox's unit of work is already committed or rolled back, so the message cannot join it; send it in a new unit of work (UnitOfWorkRunner, ICommandBus) or through IMessageBus.");
        }

        // Unset, the correlation, cause and user are those of the running unit of work (the command sent over HTTP, the handled message).
        var ambient = UnitOfWorkRunner.Current?.Metadata;
        var envelope = envelopes.Create(
            message,
            delivery?.CorrelationId ?? ambient?.CorrelationId,
            delivery?.CausationId ?? ambient?.CausationId,
            delivery?.UserId ?? ambient?.UserId,
            delivery?.PartitionKey,
            delivery?.Headers);

        // The trace continues from the code that wrote the message, not from the relay that happens to send it (unless the
        // caller set a traceparent in the headers: a context forwarded from another system is kept).
        envelope = TraceContext.InjectUnlessSet(envelope, Activity.Current);
        destination ??= envelope.MessageType;
        var delay = delivery?.Delay is { } d && d > TimeSpan.Zero ? d : (TimeSpan?)null;

        // What the transport will refuse on every try fails here, in the caller, instead of at the head of the outbox.
        SendChecks.Validate(transport.Capabilities, destination, envelope, delay);
        // In the form every store keeps, so the in-memory store need not copy the row to keep it so.
        var now = StoredTime.Of(timeProvider.GetUtcNow());
        var row = new OutboxMessage
        {
            Id = MessageIds.NewId(now),
            DestinationKind = kind,
            Destination = destination,
            Envelope = envelope,
            CreatedAt = now,
            PartitionKey = envelope.PartitionKey,
            DeliverAt = delay is { } wait ? Later(now, wait) : null,
        };

        await store.AddAsync([row], unitOfWork, cancellationToken).ConfigureAwait(false);
        unitOfWork.OnCommitted(_ =>
        {
            signal.Wake();
            return ValueTask.CompletedTask;
        });
    }

    /// <summary>True once the unit of work this outbox writes in has completed: nothing can be added any more.</summary>
    internal bool HasEnded => unitOfWork.IsCompleted;

    // A delay the transport allows may still pass the calendar's end; such a message is due at the end of time.
    internal static DateTimeOffset Later(DateTimeOffset now, TimeSpan delay) =>
        delay < DateTimeOffset.MaxValue - now ? now + delay : DateTimeOffset.MaxValue;
}
