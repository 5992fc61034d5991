namespace Herald.Messages;

/// <summary>Builds envelopes for message objects: logical type and version from the registry, a Guid v7 id, time from the clock.</summary>
public sealed class EnvelopeFactory
{
    private readonly MessageTypeRegistry _registry;
    private readonly IMessageSerializer _serializer;
    private readonly TimeProvider _timeProvider;

    /// <summary>Creates the factory.</summary>
    public EnvelopeFactory(MessageTypeRegistry registry, IMessageSerializer serializer, TimeProvider timeProvider)
    {
        _registry = registry;
        _serializer = serializer;
        _timeProvider = timeProvider;
    }

    /// <summary>The registry used for type names.</summary>
    public MessageTypeRegistry Registry => _registry;

    /// <summary>The serializer used for bodies.</summary>
    public IMessageSerializer Serializer => _serializer;

    /// <summary>
    /// Creates an envelope for the message. Throws <see cref="MessageTypeNotRegisteredException"/> when its type is
    /// not registered. A missing correlation id is set to the new message id (the message starts a flow).
    /// </summary>
    public Envelope Create(
        object message,
        string? correlationId = null,
        string? causationId = null,
        string? userId = null,
        string? partitionKey = null,
        IReadOnlyDictionary<string, string>? headers = null)
    {
        ArgumentNullException.ThrowIfNull(message);
        var type = message.GetType();
        var info = _registry.GetByType(type);
        // Millisecond precision: what every wire format (CloudEvents time, AMQP timestamp) and the Guid v7 id carry.
        var clock = _timeProvider.GetUtcNow();
        var now = new DateTimeOffset(clock.Ticks - (clock.Ticks % TimeSpan.TicksPerMillisecond), TimeSpan.Zero);
        var id = MessageIds.NewId(now);
        return new Envelope
        {
            MessageId = id,
            MessageType = info.Name,
            SchemaVersion = info.Version,
            Time = now,
            CorrelationId = correlationId,
            CorrelatesToSelf = correlationId is null,
            CausationId = causationId,
            UserId = userId,
            PartitionKey = partitionKey,
            ContentType = _serializer.ContentType,
            Headers = headers ?? EmptyHeaders.Instance,
            Body = _serializer.Serialize(message, type),

            // The attempt it will be delivered as; consumers see the transport's own count on redeliveries.
            DeliveryAttempt = 1,
        };
    }
}
