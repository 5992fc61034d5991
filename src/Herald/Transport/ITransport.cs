using Herald.Messages;

namespace Herald.Transport;

/// <summary>
/// The port every broker adapter implements. Queues hold messages for competing consumers; topics fan a
/// message out to every queue bound to them (each such queue is a named subscription of the topic).
/// A consumer settles each <see cref="Delivery"/> explicitly: ack, nack with a delay, or dead-letter.
/// </summary>
public interface ITransport : IAsyncDisposable
{
    /// <summary>A short name for logs and metrics, such as <c>in-memory</c> or <c>rabbitmq</c>.</summary>
    string Name { get; }

    /// <summary>What this transport guarantees beyond the common contract.</summary>
    TransportCapabilities Capabilities { get; }

    /// <summary>Creates a queue if it does not exist yet. Sending to a queue also creates it, so nothing sent is lost.</summary>
    ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default);

    /// <summary>Binds a queue to a topic: from now on every message published to the topic is copied into the queue.</summary>
    ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default);

    /// <summary>Sends a message to one queue. Completes once the transport has accepted it (durably, where it is durable).</summary>
    ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Publishes a message to a topic: every bound queue gets a copy. Completes once accepted.</summary>
    ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Starts consuming a queue. The handler runs up to <see cref="ConsumerOptions.MaxConcurrency"/> deliveries at
    /// once. A delivery the handler leaves unsettled is acked when it returns and nacked (redelivered) when it throws.
    /// </summary>
    ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default);
}

/// <summary>Handles one delivery; settle it through its methods, or let the consumer do so on return or exception.</summary>
public delegate ValueTask DeliveryHandler(Delivery delivery, CancellationToken cancellationToken);
