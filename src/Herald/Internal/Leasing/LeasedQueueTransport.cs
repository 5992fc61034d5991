using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Internal;

/// <summary>
/// What the durable queues of the SQL stores (SQLite, PostgreSQL) share around their own statements: their capabilities,
/// the checks before a send, consumers started over a <see cref="ILeasedQueueBackend{TMessage}"/> once the storage is ready,
/// and a dispose that stops those consumers before the transport releases its storage.
/// </summary>
/// <typeparam name="TMessage">The backend's claimed message.</typeparam>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public abstract class LeasedQueueTransport<TMessage> : ITransport
    where TMessage : LeasedMessage
{
    private readonly int _maxMessageBytes;
    private int _disposed;

    /// <summary>Creates the transport; its consumers run with <paramref name="settings"/>, and sends take bodies of at most <paramref name="maxMessageBytes"/>.</summary>
    protected LeasedQueueTransport(LeasedQueueSettings settings, int maxMessageBytes)
    {
        ArgumentNullException.ThrowIfNull(settings);
        Consumers = new LeasedQueueConsumers<TMessage>(settings);
        TimeProvider = settings.TimeProvider;
        Logger = settings.Logger;
        _maxMessageBytes = maxMessageBytes;
        Capabilities = new TransportCapabilities
        {
            IsDurable = true,
            SupportsDelayedDelivery = true,
            PreservesOrderPerPartitionKey = true,
            SupportsNativeDeadLetter = true,
            MaxMessageBytes = maxMessageBytes,
        };
    }

    /// <inheritdoc />
    public abstract string Name { get; }

    /// <inheritdoc />
    public TransportCapabilities Capabilities { get; }

    /// <summary>The clock of delays, visibility and leases.</summary>
    public TimeProvider TimeProvider { get; }

    /// <summary>Where the transport and its consumers log.</summary>
    public ILogger Logger { get; }

    /// <summary>Whether <see cref="DisposeAsync"/> has begun.</summary>
    protected bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>The consumers started and not yet stopped; <see cref="StartConsumer"/> starts one here.</summary>
    protected LeasedQueueConsumers<TMessage> Consumers { get; }

    /// <inheritdoc />
    public abstract ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default);

    /// <inheritdoc />
    public abstract ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default);

    /// <inheritdoc />
    public abstract ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default);

    /// <inheritdoc />
    public abstract ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Checks the arguments, makes the storage ready (<see cref="ReadyAsync"/>), then starts a consumer (<see cref="StartConsumer"/>).</summary>
    public async ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default)
    {
        ValidateName(queue, nameof(queue));
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        options.Validate();
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        await ReadyAsync(cancellationToken).ConfigureAwait(false);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        return StartConsumer(queue, options, handler);
    }

    /// <summary>Stops the consumers, then releases the storage (<see cref="DisposeCoreAsync"/>); later calls do nothing.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await Consumers.DisposeAllAsync().ConfigureAwait(false);
        await DisposeCoreAsync().ConfigureAwait(false);
        GC.SuppressFinalize(this);
    }

    /// <summary>Creates or opens the storage (the schema, the file) before a consumer starts.</summary>
    protected abstract ValueTask ReadyAsync(CancellationToken cancellationToken);

    /// <summary>Starts a consumer of <paramref name="queue"/> in <see cref="Consumers"/>, over a backend of its own; the arguments are checked.</summary>
    protected abstract ITransportConsumer StartConsumer(string queue, ConsumerOptions options, DeliveryHandler handler);

    /// <summary>Releases the storage; the consumers are already stopped.</summary>
    protected abstract ValueTask DisposeCoreAsync();

    /// <summary>Throws a <see cref="MessageTooLargeException"/> when the envelope's body is larger than the transport takes.</summary>
    protected void ThrowIfTooLarge(Envelope envelope) => TransportArguments.ThrowIfTooLarge(envelope, _maxMessageBytes);

    /// <summary>Throws an <see cref="ArgumentException"/> for <paramref name="parameter"/> when a queue or topic name is empty.</summary>
    protected static void ValidateName(string name, string parameter) => TransportArguments.ThrowIfEmptyName(name, parameter);
}
