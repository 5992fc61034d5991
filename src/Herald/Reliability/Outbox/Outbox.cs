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
        AddAsync(message, OutboxDestinationKind.Queue, routes.GetQueue(message.GetType()) ?? heraldOptions.Value.EndpointName, options, cancellationToken);

    public ValueTask PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull =>
        AddAsync(message, OutboxDestinationKind.Topic, destination: null, options, cancellationToken);

    private async ValueTask AddAsync(object message, OutboxDestinationKind kind, string? destination, DeliveryOptions? delivery, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        // Unset, the correlation, cause and user are those of the running unit of work (the command sent over HTTP, the handled message).
        var ambient = UnitOfWorkRunner.Current?.Metadata;
        var envelope = envelopes.Create(
            message,
            delivery?.CorrelationId ?? ambient?.CorrelationId,
            delivery?.CausationId ?? ambient?.CausationId,
            delivery?.UserId ?? ambient?.UserId,
            delivery?.PartitionKey,
            delivery?.Headers);

        // The trace continues from the code that wrote the message, not from the relay that happens to send it.
        envelope = TraceContext.Inject(envelope, Activity.Current);
        destination ??= envelope.MessageType;
        var delay = delivery?.Delay is { } d && d > TimeSpan.Zero ? d : (TimeSpan?)null;

        // What the transport will refuse on every try fails here, in the caller, instead of at the head of the outbox.
        SendChecks.Validate(transport.Capabilities, destination, envelope, delay);
        var now = timeProvider.GetUtcNow();
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

        if (unitOfWork.IsCompleted)
        {
            // Outside a live unit of work (its scope already committed): write at once.
            await store.AddAsync([row], unitOfWork: null, cancellationToken).ConfigureAwait(false);
            signal.Wake();
            return;
        }

        await store.AddAsync([row], unitOfWork, cancellationToken).ConfigureAwait(false);
        unitOfWork.OnCommitted(_ =>
        {
            signal.Wake();
            return ValueTask.CompletedTask;
        });
    }

    // A delay the transport allows may still pass the calendar's end; such a message is due at the end of time.
    internal static DateTimeOffset Later(DateTimeOffset now, TimeSpan delay) =>
        delay < DateTimeOffset.MaxValue - now ? now + delay : DateTimeOffset.MaxValue;
}
