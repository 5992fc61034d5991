using Herald.Messages;
using Herald.Transport;

namespace Herald.Conformance.Transport;

/// <summary>Passes every call to an inner transport; a test's transport overrides only what it changes.</summary>
public abstract class DelegatingTransport(ITransport inner) : ITransport
{
    /// <summary>The transport every call goes to.</summary>
    public ITransport Inner => inner;

    public virtual string Name => inner.Name;

    public virtual TransportCapabilities Capabilities => inner.Capabilities;

    public virtual ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) => inner.DeclareQueueAsync(queue, cancellationToken);

    public virtual ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default) => inner.BindAsync(topic, queue, cancellationToken);

    public virtual ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        inner.SendAsync(queue, envelope, options, cancellationToken);

    public virtual ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        inner.PublishAsync(topic, envelope, options, cancellationToken);

    public virtual ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
        inner.ConsumeAsync(queue, options, handler, cancellationToken);

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
