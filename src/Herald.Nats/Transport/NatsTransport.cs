using System.Runtime.CompilerServices;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;

namespace Herald.Nats.Transport;

/// <summary>
/// The transport on NATS JetStream. A queue is a durable pull consumer with explicit acks: of a stream of its own
/// (<c>{prefix}_Q_{queue}</c>, a work queue by default) or of a declared stream through <see cref="NatsTransportOptions.Queues"/>.
/// A topic is a stream of its own that bound queues' streams source from, or a subject of a declared stream. A send
/// completes when the stream stored it (the publish ack), carrying the message id as <c>Nats-Msg-Id</c>.
/// </summary>
internal sealed partial class NatsTransport : BrokerTransport<NatsConsumer>, ITransport
{
    // Between tries of a send JetStream did not answer: doubling from the first to the longest.
    private static readonly TimeSpan PublishRetryFirstWait = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan PublishRetryLongestWait = TimeSpan.FromSeconds(1);

    private readonly NatsTransportOptions _options;
    private NatsConnection? _connection;
    private NatsJSContext? _js;

    public NatsTransport(NatsTransportOptions options, TimeProvider timeProvider, ILoggerFactory loggerFactory)
        : base(timeProvider, loggerFactory, "Herald.Nats")
    {
        ArgumentNullException.ThrowIfNull(options);
        TransportArguments.ThrowIfInvalid(options.Validate(), "NATS transport");
        _options = options.Snapshot();
        Names = new NatsNames(_options.SubjectPrefix, _options.StreamPrefix);
        Capabilities = BrokerCapabilities(_options.MaxMessageBytes) with
        {
            // Delayed nacks are JetStream's own (nak with a delay). A delayed send waits in the queue's delay stream,
            // nakked there until due and then moved to the queue (NatsDelayMover), so a delay never holds up other
            // messages, costs the queue's consumer no delivery, and needs no scheduler (NATS 2.9 has no per-message
            // delivery time).
            SupportsDelayedDelivery = true,

            // A subject token per name, capped by NatsNames (longer names are shortened with a hash): no length limit here.
            MaxDelay = MaxDelay,
        };
    }

    /// <summary>The longest delay: a nak delay is a Go duration in nanoseconds on the wire, so keep well inside it.</summary>
    public static TimeSpan MaxDelay { get; } = TimeSpan.FromDays(365);

    /// <inheritdoc />
    public string Name => "nats";

    /// <inheritdoc />
    public TransportCapabilities Capabilities { get; }

    public NatsTransportOptions Options => _options;

    public NatsNames Names { get; }

    /// <summary>The server address without credentials, for messages and logs.</summary>
    public string Endpoint => UserInfo.Redact(_options.Url)!;

    internal NatsJSContext JetStream => _js ?? throw new InvalidOperationException("The NATS transport is not connected yet.");

    internal NatsConnection Connection => _connection ?? throw new InvalidOperationException("The NATS transport is not connected yet.");

    /// <inheritdoc />
    protected override async ValueTask DeclareQueueCoreAsync(string queue, CancellationToken cancellationToken)
    {
        var target = await EnsureQueueAsync(queue, cancellationToken).ConfigureAwait(false);

        // The health check's probe: sends answer from the cache (a mapped stream from the options), this asks the server.
        await JetStream.GetStreamAsync(target.Stream, cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        options?.Delay > TimeSpan.Zero
            ? PublishToAsync(queue, nameof(queue), static (transport, name, token) => transport.DelaySubjectAsync(name, token), envelope, options, cancellationToken)
            : PublishToAsync(queue, nameof(queue), static (transport, name, token) => transport.QueueSubjectAsync(name, token), envelope, options, cancellationToken);

    /// <inheritdoc />
    public ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        options?.Delay > TimeSpan.Zero && _options.Topics.ContainsKey(topic)
            ? PublishToAsync(topic, nameof(topic), static (transport, name, token) => transport.TopicDelaySubjectAsync(name, token), envelope, options, cancellationToken)
            : PublishToAsync(topic, nameof(topic), static (transport, name, token) => transport.EnsureTopicAsync(name, token), envelope, options, cancellationToken);

    /// <summary>A send or a publish: to the subject <paramref name="subjectOf"/> gives for the queue or topic (making its stream).</summary>
    private ValueTask PublishToAsync(
        string name,
        string parameter,
        Func<NatsTransport, string, CancellationToken, ValueTask<string>> subjectOf,
        Envelope envelope,
        SendOptions? options,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        ValidateName(name, parameter);
        CheckSize(envelope);
        TransportArguments.ThrowIfDelayTooLong(options, MaxDelay);

        // Connected and the stream made already (every send but the first): the publish is the only async step.
        if (IsConnected)
        {
            var subject = subjectOf(this, name, cancellationToken);
            return subject.IsCompletedSuccessfully
                ? PublishCoreAsync(subject.Result, envelope, options, cancellationToken)
                : PublishWhenReadyAsync(subject, envelope, options, cancellationToken);
        }

        return PublishSlowAsync(name, subjectOf, envelope, options, cancellationToken);
    }

    private async ValueTask PublishSlowAsync(
        string name,
        Func<NatsTransport, string, CancellationToken, ValueTask<string>> subjectOf,
        Envelope envelope,
        SendOptions? options,
        CancellationToken cancellationToken)
    {
        await ConnectAsync(cancellationToken).ConfigureAwait(false);

        // The stream first, so a message sent before any consumer exists waits in it instead of finding no stream.
        var subject = await subjectOf(this, name, cancellationToken).ConfigureAwait(false);
        await PublishCoreAsync(subject, envelope, options, cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask PublishWhenReadyAsync(ValueTask<string> ensuring, Envelope envelope, SendOptions? options, CancellationToken cancellationToken)
    {
        var subject = await ensuring.ConfigureAwait(false);
        await PublishCoreAsync(subject, envelope, options, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The subject a queue is sent to, once its stream is made (synchronously when it was made before).</summary>
    private ValueTask<string> QueueSubjectAsync(string queue, CancellationToken cancellationToken)
    {
        var target = EnsureQueueAsync(queue, cancellationToken);
        return target.IsCompletedSuccessfully ? new ValueTask<string>(target.Result.Subject) : AwaitedAsync(target);

        static async ValueTask<string> AwaitedAsync(ValueTask<QueueTarget> target) => (await target.ConfigureAwait(false)).Subject;
    }

    /// <inheritdoc />
    protected override async ValueTask<NatsConsumer> StartConsumerAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken)
    {
        var target = await EnsureQueueAsync(queue, cancellationToken).ConfigureAwait(false);
        var prefetch = Math.Max(_options.Prefetch ?? options.Prefetch, options.MaxConcurrency);
        NatsConsumer consumer;
        try
        {
            var durable = await EnsureDurableAsync(queue, target, cancellationToken).ConfigureAwait(false);
            var delays = await EnsureDelayLinesAsync(queue, target, cancellationToken).ConfigureAwait(false);
            consumer = NatsConsumer.Start(this, durable, delays, queue, target, options.MaxConcurrency, prefetch, (_options.RawQueues.TryGetValue(queue, out var raw) ? raw : null), handler, Logger);
        }
        catch (Exception e) when (e is NatsException or NatsJSException)
        {
            throw new HeraldException($"Could not start consuming '{queue}' on NATS at {Endpoint}: {e.Message}", e);
        }

        Log.ConsumerStarted(Logger, queue, target.Stream, prefetch, options.MaxConcurrency);
        return consumer;
    }

    /// <summary>Connects and declares the configured streams; fails naming the server when it cannot be reached.</summary>
    protected override async ValueTask ConnectCoreAsync(CancellationToken cancellationToken)
    {
        var connection = new NatsConnection(new NatsOpts { Url = _options.Url, Name = _options.ClientName });
        try
        {
            await connection.ConnectAsync().AsTask().WaitAsync(cancellationToken).ConfigureAwait(false);
            var js = new NatsJSContext(connection);
            foreach (var stream in _options.Streams)
            {
                await js.CreateOrUpdateStreamAsync(NatsTopology.StreamConfig(stream), cancellationToken).ConfigureAwait(false);
            }

            _connection = connection;
            _js = js;
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw new HeraldException($"Could not connect to NATS JetStream at {Endpoint}: {UserInfo.Redact(e.Message)}", e);
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        if (connection.ServerInfo?.MaxPayload is { } maxPayload && maxPayload < _options.MaxMessageBytes)
        {
            Log.MaxPayloadBelowLimit(Logger, Endpoint, maxPayload, _options.MaxMessageBytes);
        }

        AdapterLog.Connected(Logger, "NATS JetStream", Endpoint);
    }

    /// <inheritdoc />
    protected override async ValueTask DisposeCoreAsync()
    {
        if (_connection is not null)
        {
            await _connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    internal void Forget(NatsConsumer consumer) => Untrack(consumer);

    private ValueTask PublishCoreAsync(string subject, Envelope envelope, SendOptions? options, CancellationToken cancellationToken)
    {
        DateTimeOffset? notBefore = options?.Delay is { } delay && delay > TimeSpan.Zero ? TimeProvider.GetUtcNow() + delay : null;
        var id = envelope.MessageId.ToString("D");
        var headers = NatsEnvelopeCodec.Encode(envelope, _options.Source, notBefore, id);

        // An envelope at attempt 0 is a re-send on purpose (a dead letter retried keeps its id): the dedup window must not drop it.
        var messageId = _options.Deduplicate && envelope.DeliveryAttempt != 0 ? id : null;
        return PublishRawAsync(subject, envelope.Body, headers, messageId, cancellationToken);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    internal async ValueTask PublishRawAsync(string subject, ReadOnlyMemory<byte> body, NatsHeaders headers, string? messageId, CancellationToken cancellationToken)
    {
        var opts = messageId is null ? null : new NatsJSPubOpts { MsgId = messageId };
        PubAckResponse ack;
        long? deadline = null;
        var wait = PublishRetryFirstWait;
        while (true)
        {
            try
            {
                ack = await JetStream.PublishAsync(subject, body, opts: opts, headers: headers, cancellationToken: cancellationToken).ConfigureAwait(false);
                break;
            }
            catch (NatsJSPublishNoResponseException e) when (!cancellationToken.IsCancellationRequested && MayRetryPublish(ref deadline))
            {
                // No answer, or no stream took it: a reconnect, or JetStream coming back after a restart. The real clock, as
                // the server's: a transport on a fake clock must not wait for it forever.
                Log.PublishRetried(Logger, subject, wait, e.Message);
                await Task.Delay(wait, cancellationToken).ConfigureAwait(false);
                wait = TimeSpan.FromTicks(Math.Min(wait.Ticks * 2, PublishRetryLongestWait.Ticks));
            }
            catch (Exception e) when (e is NatsException && (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested))
            {
                if (e is NatsJSPublishNoResponseException)
                {
                    ForgetStreamOf(subject);
                }

                throw new HeraldException($"Publishing to '{subject}' on NATS at {Endpoint} failed: {e.Message}", e);
            }
        }

        // A duplicate within the stream's window is what Nats-Msg-Id is for: the message is stored once, the send succeeded.
        if (ack.Duplicate && ack.Error is null)
        {
            Log.DuplicateSuppressed(Logger, messageId, subject);
            return;
        }

        ack.EnsureSuccess();
    }

    // The first failure starts the send's retry window; false once it is over.
    private bool MayRetryPublish(ref long? deadline)
    {
        var now = Environment.TickCount64;
        deadline ??= now + (long)_options.PublishRetryTimeout.TotalMilliseconds;
        return now < deadline;
    }

    private void CheckSize(Envelope envelope) => TransportArguments.ThrowIfTooLarge(envelope, _options.MaxMessageBytes);

    private static void ValidateName(string name, string parameter) => TransportArguments.ThrowIfEmptyName(name, parameter);
}
