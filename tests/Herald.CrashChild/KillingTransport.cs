using Herald.Messages;
using Herald.Transport;

namespace Herald.CrashChild;

/// <summary>
/// A transport that hands each send to a durable inner one (the SQL queue of the relay's own database) and, once the inner
/// send returned, prints "sent &lt;id&gt;" so the parent can kill the process while the relay is busy. At send number
/// <c>killAtSend</c> (from 1; 0 never) it prints "killing &lt;id&gt;" instead and kills its own process with SIGKILL: the
/// broker has the message, the outbox does not know yet (the relay marks a batch sent after its sends). No send starts
/// before <see cref="Start"/>, so the parent has read which messages were committed before any kill. Each send first
/// waits <see cref="Latency"/>, as a broker across a network would take: the parent reads the progress lines on a loaded
/// machine, and without it the relay could send and mark every pending message before the parent's kill lands. Sends go
/// one at a time, as over one broker connection: the relay sends a batch concurrently, and on a quiet machine a whole
/// batch of concurrent sends finished, and was marked, within the time the parent took to read a line and kill.
/// </summary>
internal sealed class KillingTransport(ITransport inner, int killAtSend) : ITransport
{
    private static readonly TimeSpan Latency = TimeSpan.FromMilliseconds(20);

    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly SemaphoreSlim _wire = new(1, 1);
    private int _sends;

    public string Name => inner.Name;

    public TransportCapabilities Capabilities => inner.Capabilities;

    /// <summary>Lets the sends go (after the child printed "ready").</summary>
    public void Start() => _started.TrySetResult();

    public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) => inner.DeclareQueueAsync(queue, cancellationToken);

    public ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default) => inner.BindAsync(topic, queue, cancellationToken);

    public async ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        await _started.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        await _wire.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await Task.Delay(Latency, cancellationToken).ConfigureAwait(false);
            await inner.SendAsync(queue, envelope, options, cancellationToken).ConfigureAwait(false);
            Sent(envelope.MessageId);
        }
        finally
        {
            _wire.Release();
        }
    }

    public async ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        await _started.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        await _wire.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await Task.Delay(Latency, cancellationToken).ConfigureAwait(false);
            await inner.PublishAsync(topic, envelope, options, cancellationToken).ConfigureAwait(false);
            Sent(envelope.MessageId);
        }
        finally
        {
            _wire.Release();
        }
    }

    public ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
        inner.ConsumeAsync(queue, options, handler, cancellationToken);

    public ValueTask DisposeAsync()
    {
        _wire.Dispose();
        return inner.DisposeAsync();
    }

    private void Sent(Guid messageId)
    {
        if (Interlocked.Increment(ref _sends) != killAtSend)
        {
            Console.WriteLine("sent " + messageId);
            return;
        }

        // The relay never goes on to the mark.
        SelfKill.Now(messageId);
    }
}
