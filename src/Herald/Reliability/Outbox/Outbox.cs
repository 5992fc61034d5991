using Herald.Persistence;
using System.Diagnostics;
using Herald.Diagnostics;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
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
        var envelope = envelopes.Create(message, delivery?.CorrelationId, delivery?.CausationId, delivery?.UserId, delivery?.PartitionKey, delivery?.Headers);

        // The trace continues from the code that wrote the message, not from the relay that happens to send it.
        envelope = TraceContext.Inject(envelope, Activity.Current);
        var now = timeProvider.GetUtcNow();
        var row = new OutboxMessage
        {
            Id = MessageIds.NewId(now),
            DestinationKind = kind,
            Destination = destination ?? envelope.MessageType,
            Envelope = envelope,
            CreatedAt = now,
            PartitionKey = envelope.PartitionKey,
            DeliverAt = delivery?.Delay is { } delay && delay > TimeSpan.Zero ? now + delay : null,
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
}
