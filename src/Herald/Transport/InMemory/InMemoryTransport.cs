using System.Collections.Concurrent;
using System.Collections.Immutable;
using System.Runtime.CompilerServices;
using Herald.Messages;

namespace Herald.Transport.InMemory;

/// <summary>
/// A transport inside one process, for unit tests, users' own tests and in-process messaging. Queues are bounded
/// (senders wait for room), delays run on the injected <see cref="TimeProvider"/>, and order per partition key is
/// kept within a consumer. Nothing survives the process.
/// </summary>
public sealed class InMemoryTransport : ITransport, INativeDeadLetterSource
{
    private readonly ConcurrentDictionary<string, InMemoryQueue> _queues = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, ImmutableArray<InMemoryQueue>> _bindings = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<InMemoryConsumer, byte> _consumers = new();
    private readonly InMemoryTransportOptions _options;
    private readonly Lock _bindingGate = new();

    /// <summary>Creates the transport with default limits and the system clock.</summary>
    public InMemoryTransport()
        : this(InMemoryTransportOptions.Default, TimeProvider.System)
    {
    }

    /// <summary>Creates the transport with the given limits and clock.</summary>
    public InMemoryTransport(InMemoryTransportOptions options, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(timeProvider);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.QueueCapacity, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.DeadLetterCapacity, 0);
        _options = options;
        TimeProvider = timeProvider;
        Capabilities = new TransportCapabilities
        {
            IsDurable = false,
            SupportsDelayedDelivery = true,
            PreservesOrderPerPartitionKey = true,
            SupportsNativeDeadLetter = true,
            MaxMessageBytes = options.MaxMessageBytes,
        };
    }

    /// <inheritdoc />
    public string Name => "in-memory";

    /// <inheritdoc />
    public TransportCapabilities Capabilities { get; }

    /// <summary>The clock that drives delayed delivery.</summary>
    public TimeProvider TimeProvider { get; }

    /// <inheritdoc />
    public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default)
    {
        GetQueue(queue);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default)
    {
        ValidateName(topic, nameof(topic));
        var target = GetQueue(queue);
        lock (_bindingGate)
        {
            var current = _bindings.GetValueOrDefault(topic, []);
            if (!current.Contains(target))
            {
                _bindings[topic] = current.Add(target);
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        CheckSize(envelope);
        return GetQueue(queue).EnqueueAsync(envelope, options?.Delay, cancellationToken);
    }

    /// <inheritdoc />
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        ValidateName(topic, nameof(topic));
        CheckSize(envelope);
        if (!_bindings.TryGetValue(topic, out var queues))
        {
            return;
        }

        foreach (var queue in queues)
        {
            await queue.EnqueueAsync(envelope, options?.Delay, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        options.Validate();
        var consumer = new InMemoryConsumer(GetQueue(queue), options, handler);
        _consumers[consumer] = 0;
        return ValueTask.FromResult<ITransportConsumer>(consumer);
    }

    /// <summary>How many messages wait, ready for delivery, in a queue (delayed and in-flight ones not counted).</summary>
    public int GetReadyCount(string queue) => _queues.TryGetValue(queue, out var q) ? q.ReadyCount : 0;

    /// <summary>The dead letters of a queue, oldest first.</summary>
    public IReadOnlyList<InMemoryDeadLetter> GetDeadLetters(string queue) =>
        _queues.TryGetValue(queue, out var q) ? [.. q.DeadLetters] : [];

    /// <summary>Removes and returns the oldest dead letter of a queue, if any.</summary>
    public InMemoryDeadLetter? TakeDeadLetter(string queue) =>
        _queues.TryGetValue(queue, out var q) && q.TryTakeDeadLetter(out var deadLetter) ? deadLetter : null;

    /// <inheritdoc />
    public ValueTask<int> DrainDeadLettersAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(moveAsync);
        return _queues.TryGetValue(queue, out var q) ? q.DrainDeadLettersAsync(moveAsync, cancellationToken) : ValueTask.FromResult(0);
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        foreach (var consumer in _consumers.Keys)
        {
            await consumer.DisposeAsync().ConfigureAwait(false);
        }

        foreach (var queue in _queues.Values)
        {
            queue.DisposeTimers();
        }
    }

    private InMemoryQueue GetQueue(string queue)
    {
        if (_queues.TryGetValue(queue, out var existing))
        {
            return existing;
        }

        ValidateName(queue, nameof(queue));
        return _queues.GetOrAdd(queue, static (name, self) => new InMemoryQueue(name, self, self._options), this);
    }

    private void CheckSize(Envelope envelope)
    {
        if (envelope.Body.Length > _options.MaxMessageBytes)
        {
            throw new MessageTooLargeException(envelope.MessageType, envelope.Body.Length, _options.MaxMessageBytes);
        }
    }

    private static void ValidateName(string name, string parameter)
    {
        if (string.IsNullOrWhiteSpace(name))
        {
            throw new ArgumentException("A queue or topic name must not be empty.", parameter);
        }
    }
}
