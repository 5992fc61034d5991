using System.Collections.Frozen;
using Herald.Internal;
using Herald.Messages;
using Herald.RabbitMQ.Diagnostics;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace Herald.RabbitMQ.Transport;

/// <summary>
/// The transport on RabbitMQ. A topic is a durable fanout exchange, a queue a durable (classic or quorum) queue.
/// Messages are persistent and, with publisher confirms, a send completes when the broker has stored it. Two
/// connections (publish, consume) recover automatically with their topology and consumers.
/// </summary>
internal sealed partial class RabbitMqTransport : BrokerTransport<RabbitMqConsumer>, ITransport
{
    private readonly RabbitMqTransportOptions _options;
    private readonly FrozenDictionary<string, string> _rawQueues;
    private IConnection? _publishConnection;
    private IConnection? _consumeConnection;
    private ChannelPool? _publishers;
    private ChannelPool? _republishers;
    private ChannelPool? _topology;
    private int _recoveries;

    public RabbitMqTransport(RabbitMqTransportOptions options, TimeProvider timeProvider, ILoggerFactory loggerFactory)
        : base(timeProvider, loggerFactory, "Herald.RabbitMQ")
    {
        ArgumentNullException.ThrowIfNull(options);
        TransportArguments.ThrowIfInvalid(options.Validate(), "RabbitMQ transport");
        _options = options.Snapshot();
        _rawQueues = options.RawQueues.ToFrozenDictionary(StringComparer.Ordinal);
        var declaresTopology = _options.DeclareTopology;
        Capabilities = BrokerCapabilities(options.MaxMessageBytes) with
        {
            SupportsDelayedDelivery = true,
            MaxNameBytes = 255,
            MaxDelay = MaxDelay,
            IsPermanentSendFailure = e => RabbitMqSendFailures.IsPermanent(e, declaresTopology),
        };
    }

    /// <inheritdoc />
    public string Name => "rabbitmq";

    /// <inheritdoc />
    public TransportCapabilities Capabilities { get; }

    public RabbitMqTransportOptions Options => _options;

    /// <summary>The broker address without credentials, for messages and logs.</summary>
    public string Endpoint
    {
        get
        {
            var uri = _options.ConnectionUri;
            var port = uri.IsDefaultPort || uri.Port < 0 ? (uri.Scheme == "amqps" ? 5671 : 5672) : uri.Port;
            var vhost = uri.AbsolutePath.Length > 1 ? Uri.UnescapeDataString(uri.AbsolutePath[1..]) : "/";
            return $"{uri.Host}:{port} (virtual host '{vhost}')";
        }
    }

    // An explicit declare asks the broker every time, past the declared-topology cache that sends rely on: the health
    // check probes with it, and must see a queue deleted behind Herald's back or a broker that no longer answers.
    /// <inheritdoc />
    protected override ValueTask DeclareQueueCoreAsync(string queue, CancellationToken cancellationToken) => RestoreQueueAsync(queue, cancellationToken);

    // A test seam: runs after a resuming consumer declared its queue again, before it consumes (a test deletes the queue there).
    internal Func<string, Task>? QueueRestoredForTests { get; set; }

    /// <inheritdoc />
    protected override async ValueTask BindCoreAsync(string topic, string queue, CancellationToken cancellationToken)
    {
        await EnsureExchangeAsync(topic, cancellationToken).ConfigureAwait(false);
        await EnsureQueueAsync(queue, cancellationToken).ConfigureAwait(false);
        await EnsureBindingAsync(topic, queue, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        ValidateName(queue, nameof(queue));
        CheckSize(envelope);
        TransportArguments.ThrowIfDelayTooLong(options, MaxDelay);

        // Connected, the queue declared and no delay (every send but the first): the publish is the only async step.
        if (IsConnected && IsDeclared(('q', queue, string.Empty)) && !(options?.Delay > TimeSpan.Zero))
        {
            return PublishCoreAsync(_publishers!, string.Empty, queue, mandatory: true, AmqpEnvelopeCodec.Encode(envelope, _options.Source), envelope.Body, Describe(envelope), cancellationToken);
        }

        return SendSlowAsync(queue, envelope, options, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        ValidateName(topic, nameof(topic));
        CheckSize(envelope);
        TransportArguments.ThrowIfDelayTooLong(options, MaxDelay);

        // Not mandatory: a topic nobody subscribes to yet simply drops the message, like every other transport.
        if (IsConnected && IsDeclared(('x', topic, string.Empty)) && !(options?.Delay > TimeSpan.Zero))
        {
            return PublishCoreAsync(_publishers!, topic, string.Empty, mandatory: false, AmqpEnvelopeCodec.Encode(envelope, _options.Source), envelope.Body, Describe(envelope), cancellationToken);
        }

        return PublishSlowAsync(topic, envelope, options, cancellationToken);
    }

    private async ValueTask SendSlowAsync(string queue, Envelope envelope, SendOptions? options, CancellationToken cancellationToken)
    {
        await ConnectAsync(cancellationToken).ConfigureAwait(false);

        // Declared first, so a message sent before any consumer exists waits in the queue instead of being lost.
        await EnsureQueueAsync(queue, cancellationToken).ConfigureAwait(false);
        var properties = AmqpEnvelopeCodec.Encode(envelope, _options.Source);
        var target = queue;
        if (options?.Delay is { } delay && delay > TimeSpan.Zero)
        {
            target = await EnsureRetryQueueAsync(queue, delay, cancellationToken).ConfigureAwait(false);
        }

        await PublishCoreAsync(_publishers!, string.Empty, target, mandatory: true, properties, envelope.Body, Describe(envelope), cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask PublishSlowAsync(string topic, Envelope envelope, SendOptions? options, CancellationToken cancellationToken)
    {
        await ConnectAsync(cancellationToken).ConfigureAwait(false);
        await EnsureExchangeAsync(topic, cancellationToken).ConfigureAwait(false);
        var properties = AmqpEnvelopeCodec.Encode(envelope, _options.Source);
        if (options?.Delay is { } delay && delay > TimeSpan.Zero)
        {
            var delayQueue = await EnsureDelayQueueAsync(topic, delay, cancellationToken).ConfigureAwait(false);
            await PublishCoreAsync(_publishers!, string.Empty, delayQueue, mandatory: true, properties, envelope.Body, Describe(envelope), cancellationToken).ConfigureAwait(false);
            return;
        }

        await PublishCoreAsync(_publishers!, topic, string.Empty, mandatory: false, properties, envelope.Body, Describe(envelope), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    protected override async ValueTask<RabbitMqConsumer> StartConsumerAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken)
    {
        ThrowIfNoRoomForCopies(queue);
        await EnsureQueueAsync(queue, cancellationToken).ConfigureAwait(false);
        var prefetch = Math.Clamp(Math.Max(_options.Prefetch ?? options.Prefetch, options.MaxConcurrency), 1, ushort.MaxValue);
        RabbitMqConsumer consumer;
        try
        {
            consumer = await RabbitMqConsumer.StartAsync(
                this, _consumeConnection!, queue, options.MaxConcurrency, prefetch, _rawQueues.GetValueOrDefault(queue), handler, Logger, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (IsBrokerFailure(e))
        {
            // The next start declares the queue again, in case it was deleted behind our back (a 404 here).
            ForgetQueue(queue);
            throw new HeraldException($"Could not start consuming '{queue}' on RabbitMQ at {Endpoint}: {e.Message}", e);
        }

        RabbitMqQueueGauges.Watch(this, queue);
        Log.ConsumerStarted(Logger, queue, prefetch, options.MaxConcurrency);
        return consumer;
    }

    /// <summary>Opens the publish and consume connections; fails naming the broker when it cannot be reached.</summary>
    protected override async ValueTask ConnectCoreAsync(CancellationToken cancellationToken)
    {
        var factory = new ConnectionFactory
        {
            Uri = _options.ConnectionUri,
            AutomaticRecoveryEnabled = true,
            TopologyRecoveryEnabled = true,
            NetworkRecoveryInterval = _options.NetworkRecoveryInterval,
        };
        var publish = await OpenAsync(factory, _options.ClientProvidedName + ":publish", cancellationToken).ConfigureAwait(false);
        IConnection consume;
        try
        {
            consume = await OpenAsync(factory, _options.ClientProvidedName + ":consume", cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await publish.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        _publishConnection = publish;
        _consumeConnection = consume;
        // RabbitMQ orders messages per channel only. With confirms, a send completes once stored, so sends awaited one
        // after another stay in order across channels; without them, one channel keeps that order.
        var publisherChannels = _options.PublisherConfirms ? _options.PublisherChannels : 1;
        _publishers = new ChannelPool(publish, publisherChannels, _options.PublisherConfirms, Logger, Forget, ForgetExchanges);

        // A retry or dead-letter copy is confirmed whatever the sends do: its original is acked once it is published, so
        // unconfirmed, a copy the broker refused (a full dead-letter queue) or returned was lost with that ack.
        _republishers = _options.PublisherConfirms ? _publishers : new ChannelPool(publish, 1, confirms: true, Logger, Forget, ForgetExchanges);
        _topology = new ChannelPool(publish, 1, confirms: false, Logger);
    }

    /// <inheritdoc />
    protected override async ValueTask DisposeCoreAsync()
    {
        RabbitMqQueueGauges.Forget(this);
        foreach (var pool in new[] { _publishers, _republishers, _topology }.Distinct())
        {
            if (pool is not null)
            {
                await pool.DisposeAsync().ConfigureAwait(false);
            }
        }

        foreach (var connection in new[] { _consumeConnection, _publishConnection })
        {
            if (connection is null)
            {
                continue;
            }

            try
            {
                await connection.CloseAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // A connection already lost cannot be closed cleanly; disposing is all that is left.
            catch (Exception)
#pragma warning restore CA1031
            {
            }

            await connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>How many times one of the connections recovered (topology, channels and consumers included).</summary>
    internal int Recoveries => Volatile.Read(ref _recoveries);

    internal void Forget(RabbitMqConsumer consumer) => Untrack(consumer);

    private async Task<IConnection> OpenAsync(ConnectionFactory factory, string name, CancellationToken cancellationToken)
    {
        IConnection connection;
        try
        {
            connection = await factory.CreateConnectionAsync(name, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            var cause = UserInfo.Redact(e.InnerException is { } inner ? $"{e.Message} ({inner.Message})" : e.Message);
            throw new HeraldException($"Could not connect to RabbitMQ at {Endpoint} as '{name}': {cause}", e);
        }

        connection.ConnectionShutdownAsync += (_, args) =>
        {
            if (args.Initiator != ShutdownInitiator.Application)
            {
                Log.ConnectionLost(Logger, name, args.ReplyCode, args.ReplyText);
            }

            return Task.CompletedTask;
        };
        connection.RecoverySucceededAsync += (_, _) =>
        {
            Interlocked.Increment(ref _recoveries);
            Log.ConnectionRecovered(Logger, name);
            return Task.CompletedTask;
        };
        connection.ConnectionRecoveryErrorAsync += (_, args) =>
        {
            Log.ConnectionRecoveryFailed(Logger, args.Exception, name);
            return Task.CompletedTask;
        };
        Log.Connected(Logger, Endpoint, name);
        return connection;
    }

    // A consumed queue's retry and dead-letter copies go to queues named after it: were those names too long, every retry
    // and native dead letter would fail, and the message come back at the same attempt for ever. Refused at start instead.
    private void ThrowIfNoRoomForCopies(string queue)
    {
        foreach (var name in (ReadOnlySpan<string>)[_options.RetryQueueName(queue, MaxDelay), _options.DeadLetterQueueName(queue)])
        {
            if (System.Text.Encoding.UTF8.GetByteCount(name) > 255)
            {
                throw new ArgumentException(
                    $"Queue '{queue}' cannot be consumed: the queue its retries or dead letters would go to, '{name}', is longer than RabbitMQ's 255 bytes. Use a shorter queue name (or RetryQueueName and DeadLetterQueueName that keep within it).",
                    nameof(queue));
            }
        }
    }

    private void CheckSize(Envelope envelope) => TransportArguments.ThrowIfTooLarge(envelope, _options.MaxMessageBytes);

    private static MessageLabel Describe(Envelope envelope) => new(envelope.MessageId, envelope.MessageType, null);

    private static void ValidateName(string name, string parameter)
    {
        TransportArguments.ThrowIfEmptyName(name, parameter);

        // AMQP short strings: queue and exchange names are at most 255 bytes.
        if (System.Text.Encoding.UTF8.GetByteCount(name) > 255)
        {
            throw new ArgumentException($"RabbitMQ queue and exchange names are at most 255 bytes; '{name[..32]}...' is longer.", parameter);
        }
    }
}
