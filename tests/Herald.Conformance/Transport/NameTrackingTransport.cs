using System.Collections.Concurrent;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Conformance.Transport;

/// <summary>
/// Passes every call on to a transport on a shared engine, remembering the queue and topic names used, so a test can
/// delete them (with what the engine derives from them) afterwards.
/// </summary>
public sealed class NameTrackingTransport(ITransport inner, ConcurrentDictionary<string, byte> names) : ITransport, INativeDeadLetterSource
{
    /// <summary>The transport the calls go to.</summary>
    public ITransport Inner => inner;

    /// <inheritdoc />
    public string Name => inner.Name;

    /// <inheritdoc />
    public TransportCapabilities Capabilities => inner.Capabilities;

    /// <inheritdoc />
    public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) =>
        inner.DeclareQueueAsync(Track(queue), cancellationToken);

    /// <inheritdoc />
    public ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default) =>
        inner.BindAsync(Track(topic), Track(queue), cancellationToken);

    /// <inheritdoc />
    public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        inner.SendAsync(Track(queue), envelope, options, cancellationToken);

    /// <inheritdoc />
    public ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        inner.PublishAsync(Track(topic), envelope, options, cancellationToken);

    /// <inheritdoc />
    public ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
        inner.ConsumeAsync(Track(queue), options, handler, cancellationToken);

    /// <inheritdoc />
    public ValueTask<int> DrainDeadLettersAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken = default) =>
        inner is INativeDeadLetterSource source ? source.DrainDeadLettersAsync(Track(queue), moveAsync, cancellationToken) : ValueTask.FromResult(0);

    /// <inheritdoc />
    public ValueTask DisposeAsync() => inner.DisposeAsync();

    private string Track(string name)
    {
        names.TryAdd(name, 0);
        return name;
    }
}
