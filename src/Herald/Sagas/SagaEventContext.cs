using Herald.Handling;

namespace Herald.Sagas;

/// <summary>What a state machine's action runs with: the instance's data and the handled message's context.</summary>
/// <typeparam name="TData">The instance's data.</typeparam>
public sealed class SagaEventContext<TData>
    where TData : class, new()
{
    internal SagaEventContext(string sagaName, string sagaId, string? state, TData data, MessageContext message)
    {
        SagaName = sagaName;
        SagaId = sagaId;
        State = state;
        Data = data;
        Message = message;
    }

    /// <summary>The machine's name.</summary>
    public string SagaName { get; }

    /// <summary>The instance's id (the event's correlation).</summary>
    public string SagaId { get; }

    /// <summary>The state the instance is leaving; null when this event creates it.</summary>
    public string? State { get; }

    /// <summary>The instance's data; changes are saved with the transition.</summary>
    public TData Data { get; set; }

    /// <summary>The handled message's context: its services, unit of work, and sends that join it (through the outbox when configured).</summary>
    public MessageContext Message { get; }

    /// <summary>Sends a command in the message's unit of work, correlated to the instance.</summary>
    public ValueTask SendAsync<TMessage>(TMessage command, DeliveryOptions? options = null)
        where TMessage : notnull =>
        Message.SendAsync(command, Correlate(options), Message.CancellationToken);

    /// <summary>Publishes an event in the message's unit of work, correlated to the instance.</summary>
    public ValueTask PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null)
        where TMessage : notnull =>
        Message.PublishAsync(message, Correlate(options), Message.CancellationToken);

    private DeliveryOptions? Correlate(DeliveryOptions? options) =>
        options?.CorrelationId is not null ? options : (options ?? DeliveryOptions.Default) with { CorrelationId = Message.Envelope.CorrelationId ?? SagaId };
}
