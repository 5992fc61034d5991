using System.Collections.Concurrent;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Internal;

/// <summary>
/// What the broker transports (NATS, Kafka, RabbitMQ) share around their own protocol: their clock and logger; a connect
/// that runs once at a time, is remembered when it succeeded and tried again after a failure; the argument checks and the
/// connect before a queue is declared, a topic bound or a consumer started; the registry of running consumers; a dispose
/// that stops those consumers before the transport closes its clients; and the checks before a drain of the native dead
/// letters.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
/// <typeparam name="TConsumer">The transport's consumer, which calls <see cref="Untrack"/> when it stops on its own.</typeparam>
public abstract class BrokerTransport<TConsumer> : INativeDeadLetterSource, IAsyncDisposable
    where TConsumer : class, ITransportConsumer
{
    private readonly SemaphoreSlim _connectGate = new(1, 1);
    private readonly ConcurrentDictionary<TConsumer, byte> _consumers = new();
    private volatile bool _connected;
    private volatile bool _disposed;

    /// <summary>
    /// Takes the clock the transport reads (delays, due times, dead-letter times) and creates its logger, of
    /// <paramref name="loggerCategory"/> (the adapter package's name).
    /// </summary>
    protected BrokerTransport(TimeProvider timeProvider, ILoggerFactory loggerFactory, string loggerCategory)
    {
        ArgumentNullException.ThrowIfNull(timeProvider);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        TimeProvider = timeProvider;
        Logger = loggerFactory.CreateLogger(loggerCategory);
    }

    /// <summary>The clock the transport reads.</summary>
    public TimeProvider TimeProvider { get; }

    /// <summary>The transport's logger, which its consumers and clients log to as well.</summary>
    public ILogger Logger { get; }

    /// <summary>Whether <see cref="DisposeAsync"/> has begun.</summary>
    protected bool IsDisposed => _disposed;

    /// <summary>True once connected and until disposed: a send may take its fast path without <see cref="ConnectAsync"/>.</summary>
    protected bool IsConnected => _connected && !_disposed;

    /// <summary>The consumers started and not yet stopped.</summary>
    protected ICollection<TConsumer> Consumers => _consumers.Keys;

    /// <summary>Connects (once); callers wait for one connect in progress, and a failed one is tried again by the next call.</summary>
    public async ValueTask ConnectAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_connected)
        {
            return;
        }

        await _connectGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_connected)
            {
                return;
            }

            await ConnectCoreAsync(cancellationToken).ConfigureAwait(false);
            _connected = true;
        }
        finally
        {
            _connectGate.Release();
        }
    }

    /// <summary>Stops the consumers, then closes the clients (<see cref="DisposeCoreAsync"/>); waits for a connect in progress.</summary>
    public async ValueTask DisposeAsync()
    {
        await _connectGate.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
        }
        finally
        {
            _connectGate.Release();
        }

        foreach (var consumer in _consumers.Keys)
        {
            await consumer.DisposeAsync().ConfigureAwait(false);
        }

        await DisposeCoreAsync().ConfigureAwait(false);
        GC.SuppressFinalize(this);
    }

    /// <summary>Checks the queue's name, connects, then makes sure the queue exists (<see cref="DeclareQueueCoreAsync"/>).</summary>
    public async ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default)
    {
        ValidateQueueName(queue, nameof(queue));
        await ConnectAsync(cancellationToken).ConfigureAwait(false);
        await DeclareQueueCoreAsync(queue, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Checks both names, connects, then binds the queue to the topic (<see cref="BindCoreAsync"/>).</summary>
    public async ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default)
    {
        ValidateQueueName(topic, nameof(topic));
        ValidateQueueName(queue, nameof(queue));
        await ConnectAsync(cancellationToken).ConfigureAwait(false);
        await BindCoreAsync(topic, queue, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Checks the arguments and that the transport is not disposed, connects, then starts a consumer
    /// (<see cref="StartConsumerAsync"/>) and remembers it, so dispose stops it.
    /// </summary>
    public async ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        ValidateQueueName(queue, nameof(queue));
        options.Validate();
        ObjectDisposedException.ThrowIf(_disposed, this);
        await ConnectAsync(cancellationToken).ConfigureAwait(false);
        return Track(await StartConsumerAsync(queue, options, handler, cancellationToken).ConfigureAwait(false));
    }

    /// <summary>Checks the queue's name, that the transport is not disposed, connects, then drains (<see cref="DrainDeadLettersCoreAsync"/>).</summary>
    public async ValueTask<int> DrainDeadLettersAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(moveAsync);
        ValidateQueueName(queue, nameof(queue));
        ObjectDisposedException.ThrowIf(_disposed, this);
        await ConnectAsync(cancellationToken).ConfigureAwait(false);
        return await DrainDeadLettersCoreAsync(queue, moveAsync, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Moves the queue's native dead letters with <paramref name="moveAsync"/>, on a connected transport; returns how many.</summary>
    protected abstract ValueTask<int> DrainDeadLettersCoreAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken);

    /// <summary>Makes sure the queue exists, on a connected transport.</summary>
    protected abstract ValueTask DeclareQueueCoreAsync(string queue, CancellationToken cancellationToken);

    /// <summary>Binds the queue to the topic (making both as needed), on a connected transport.</summary>
    protected abstract ValueTask BindCoreAsync(string topic, string queue, CancellationToken cancellationToken);

    /// <summary>Starts a consumer of the queue with checked arguments, on a connected transport.</summary>
    protected abstract ValueTask<TConsumer> StartConsumerAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken);

    /// <summary>
    /// What every broker here guarantees, for a transport to add its own to (with <c>with</c>): messages are durable, kept in
    /// order per partition key within a consumer, and dead-lettered natively; bodies up to <paramref name="maxMessageBytes"/>.
    /// </summary>
    protected static TransportCapabilities BrokerCapabilities(int maxMessageBytes) => new()
    {
        IsDurable = true,
        PreservesOrderPerPartitionKey = true,
        SupportsNativeDeadLetter = true,
        MaxMessageBytes = maxMessageBytes,
    };

    /// <summary>Throws an <see cref="ArgumentException"/> for a queue or topic name the broker does not take; by default, an empty one.</summary>
    protected virtual void ValidateQueueName(string queue, string parameter) => TransportArguments.ThrowIfEmptyName(queue, parameter);

    /// <summary>Opens the clients; runs under the connect gate, never twice at once, and never after dispose began.</summary>
    protected abstract ValueTask ConnectCoreAsync(CancellationToken cancellationToken);

    /// <summary>Closes what <see cref="ConnectCoreAsync"/> opened, if it did; the consumers are already stopped.</summary>
    protected abstract ValueTask DisposeCoreAsync();

    /// <summary>Remembers a started consumer, so dispose stops it; returns it.</summary>
    protected TConsumer Track(TConsumer consumer)
    {
        ArgumentNullException.ThrowIfNull(consumer);
        _consumers[consumer] = 0;
        return consumer;
    }

    /// <summary>Forgets a consumer that stopped (disposed by its owner).</summary>
    protected void Untrack(TConsumer consumer) => _consumers.TryRemove(consumer, out _);
}
