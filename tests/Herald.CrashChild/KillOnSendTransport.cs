using Herald.Messages;
using Herald.Transport;

namespace Herald.CrashChild;

/// <summary>
/// A transport that kills its own process with SIGKILL when asked to send a message of <paramref name="messageType"/>,
/// before the inner transport has it: a crash between a commit and the send that was to follow it. Prints
/// "killing &lt;id&gt;" first, so the parent knows where it died.
/// </summary>
internal sealed class KillOnSendTransport(ITransport inner, string messageType) : ITransport
{
    public string Name => inner.Name;

    public TransportCapabilities Capabilities => inner.Capabilities;

    public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) => inner.DeclareQueueAsync(queue, cancellationToken);

    public ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default) => inner.BindAsync(topic, queue, cancellationToken);

    public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        if (envelope.MessageType == messageType)
        {
            SelfKill.Now(envelope.MessageId);
        }

        return inner.SendAsync(queue, envelope, options, cancellationToken);
    }

    public ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        inner.PublishAsync(topic, envelope, options, cancellationToken);

    public ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
        inner.ConsumeAsync(queue, options, handler, cancellationToken);

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
