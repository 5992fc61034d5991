using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sagas;

/// <summary>What a state machine's action runs with: the instance's data and the handled message's context.</summary>
/// <typeparam name="TData">The instance's data.</typeparam>
public sealed class SagaEventContext<TData>
    where TData : class, new()
{
    private readonly List<SagaTimeout> _timeouts;

    internal SagaEventContext(string sagaName, string sagaId, string? state, TData data, MessageContext message, IReadOnlyList<SagaTimeout>? timeouts = null)
    {
        SagaName = sagaName;
        SagaId = sagaId;
        State = state;
        Data = data;
        Message = message;
        _timeouts = [.. timeouts ?? []];
    }

    /// <summary>The timeouts the instance holds, as this transition leaves them.</summary>
    public IReadOnlyList<SagaTimeout> Timeouts => _timeouts;

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

    /// <summary>
    /// Sends a command in the message's unit of work, correlated to the instance: through the outbox when configured,
    /// else once the transition has committed (a transition that fails or runs again sends nothing of its failed run).
    /// </summary>
    public ValueTask SendAsync<TMessage>(TMessage command, DeliveryOptions? options = null)
        where TMessage : notnull
    {
        var correlated = Correlate(options);
        return OnCommitAsync<TMessage>(token => Message.SendAsync(command, correlated, token));
    }

    /// <summary>Publishes an event in the message's unit of work, correlated to the instance, as <see cref="SendAsync{TMessage}"/> sends.</summary>
    public ValueTask PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null)
        where TMessage : notnull
    {
        var correlated = Correlate(options);
        return OnCommitAsync<TMessage>(token => Message.PublishAsync(message, correlated, token));
    }

    /// <summary>
    /// Schedules <paramref name="message"/> to reach this saga after <paramref name="delay"/> as the timeout
    /// <paramref name="name"/>, replacing a timeout of that name the instance holds (whose delivery is then ignored). It is
    /// sent in the message's unit of work and held by the instance when the transition saves. Route the message type to the
    /// saga's queue and correlate it like any event of the machine. Without an outbox it leaves once the transition commits.
    /// </summary>
    /// <returns>The timeout, with the id its delivery carries.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The delay is negative, or longer than the transport can hold (its <c>Capabilities.MaxDelay</c>).</exception>
    public async ValueTask<SagaTimeout> ScheduleTimeoutAsync<TMessage>(string name, TMessage message, TimeSpan delay)
        where TMessage : notnull
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(message);
        var services = Message.Services;
        var time = services.GetRequiredService<TimeProvider>();
        var dueAt = SagaTimeouts.DueAt(services, SagaName, name, time.GetUtcNow(), delay);
        var type = services.GetRequiredService<MessageTypeRegistry>().GetByType(message.GetType());
        var body = services.GetRequiredService<IMessageSerializer>().Serialize(message, type.ClrType);
        var timeout = new SagaTimeout(name, Guid.NewGuid(), dueAt, type.Name, body);
        await SagaTimeouts.SendOnCommitAsync(
            Message, Message.UnitOfWork, services, SagaName, SagaId, timeout, time, (wait, token) => Message.SendAsync(message, Correlate(SagaTimeouts.Options(timeout, wait)), token), Message.CancellationToken)
            .ConfigureAwait(false);
        _timeouts.RemoveAll(t => t.Name == name);
        _timeouts.Add(timeout);
        return timeout;
    }

    /// <summary>Cancels the timeout <paramref name="name"/>: its delivery is ignored. False when the instance holds none of that name.</summary>
    public bool CancelTimeout(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _timeouts.RemoveAll(t => t.Name == name) > 0;
    }

    /// <summary>Drops the timeout whose delivery is being handled, so it fires once.</summary>
    internal void Fired(Guid id) => _timeouts.RemoveAll(t => t.Id == id);

    private ValueTask OnCommitAsync<TMessage>(Func<CancellationToken, ValueTask> send) =>
        SagaSends.OnCommitAsync(
            Message, Message.UnitOfWork, Message.Services, send, (logger, ex) => Log.SagaMessageNotSent(logger, ex, SagaName, SagaId, typeof(TMessage).Name), Message.CancellationToken);

    private DeliveryOptions? Correlate(DeliveryOptions? options) =>
        options?.CorrelationId is not null ? options : (options ?? DeliveryOptions.Default) with { CorrelationId = Message.Envelope.CorrelationId ?? SagaId };
}
