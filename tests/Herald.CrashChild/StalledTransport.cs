using Herald.Messages;
using Herald.Transport;

namespace Herald.CrashChild;

/// <summary>
/// A transport whose sends and publishes never finish (until cancelled) and never reach the inner transport, so the relay
/// is caught mid-send when the process is killed; <see cref="FirstSend"/> names the message it started with.
/// </summary>
internal sealed class StalledTransport(ITransport inner) : ITransport
{
    private readonly TaskCompletionSource<Guid> _firstSend = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes with the message id of the first send or publish.</summary>
    public Task<Guid> FirstSend => _firstSend.Task;

    public string Name => inner.Name;

    public TransportCapabilities Capabilities => inner.Capabilities;

    public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) => inner.DeclareQueueAsync(queue, cancellationToken);

    public ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default) => inner.BindAsync(topic, queue, cancellationToken);

    public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        StallAsync(envelope, cancellationToken);

    public ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        StallAsync(envelope, cancellationToken);

    public ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
        inner.ConsumeAsync(queue, options, handler, cancellationToken);

    public ValueTask DisposeAsync() => inner.DisposeAsync();

    private async ValueTask StallAsync(Envelope envelope, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        _firstSend.TrySetResult(envelope.MessageId);
        await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
    }
}
