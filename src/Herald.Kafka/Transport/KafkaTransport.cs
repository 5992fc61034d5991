using System.Collections.Concurrent;
using System.Collections.Immutable;
using System.Runtime.CompilerServices;
using System.Text;
using Confluent.Kafka;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Kafka.Transport;

/// <summary>
/// The transport on Kafka. A queue is a topic of its own name read by a consumer group of the same name (plus the
/// configured prefix): competing consumers of a queue are members of that group and share its partitions. A topic is a
/// Kafka topic, and binding a queue to it makes the queue's group read it too, from the end of the log at the time of
/// the binding. The producer is idempotent with acks=all, so a send completes once every in-sync replica has it.
/// </summary>
internal sealed partial class KafkaTransport : BrokerTransport<KafkaConsumer>, ITransport
{
    private readonly KafkaTransportOptions _options;
    private readonly ConcurrentDictionary<string, ImmutableSortedSet<string>> _bindings = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Lazy<RetryRelay>> _relays = new(StringComparer.Ordinal);
    private IProducer<byte[]?, byte[]>? _producer;
    private IAdminClient? _admin;
    private Herald.Internal.IBrokerPartitionObserver[]? _observers;

    public KafkaTransport(KafkaTransportOptions options, TimeProvider timeProvider, ILoggerFactory loggerFactory)
        : base(timeProvider, loggerFactory, "Herald.Kafka")
    {
        ArgumentNullException.ThrowIfNull(options);
        TransportArguments.ThrowIfInvalid(options.Validate(), "Kafka transport");
        _options = options.Snapshot();
        Capabilities = BrokerCapabilities(options.MaxMessageBytes) with
        {
            // Kafka has no per-message delay: delayed nacks and sends wait in a retry topic, read in order, so a long delay
            // at the head of a partition holds up shorter ones behind it. Close enough for retries, not a delay promise.
            SupportsDelayedDelivery = false,
            MaxNameBytes = MaxTopicNameLength,
            MaxDelay = MaxDelay,
        };
    }

    /// <summary>
    /// The longest delay a send or nack writes into a retry topic (as on NATS and SQS): the relay takes a record due further
    /// away for malformed, since held until then it would hold up its partition, Herald's own retries behind it included.
    /// </summary>
    internal static readonly TimeSpan MaxDelay = TimeSpan.FromDays(365);

    /// <summary>Kafka's limit on topic names (249 characters, of [a-zA-Z0-9._-]).</summary>
    public const int MaxTopicNameLength = 249;

    /// <inheritdoc />
    public string Name => "kafka";

    /// <inheritdoc />
    public TransportCapabilities Capabilities { get; }

    public KafkaTransportOptions Options => _options;

    /// <summary>Told when a consumer is given partitions or gives them up (transport-source streams follow them); resolved on first use.</summary>
    public Func<IEnumerable<Herald.Internal.IBrokerPartitionObserver>> ObserversSource { get; init; } = static () => [];

    public IEnumerable<Herald.Internal.IBrokerPartitionObserver> PartitionObservers => _observers ??= [.. ObserversSource()];

    /// <inheritdoc />
    protected override async ValueTask DeclareQueueCoreAsync(string queue, CancellationToken cancellationToken)
    {
        await EnsureTopicAsync(queue, cancellationToken).ConfigureAwait(false);
        await ProbeTopicAsync(queue, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    protected override async ValueTask BindCoreAsync(string topic, string queue, CancellationToken cancellationToken)
    {
        await EnsureTopicAsync(topic, cancellationToken).ConfigureAwait(false);
        await EnsureTopicAsync(queue, cancellationToken).ConfigureAwait(false);
        var before = _bindings.GetValueOrDefault(queue, ImmutableSortedSet<string>.Empty.WithComparer(StringComparer.Ordinal));
        if (before.Contains(topic))
        {
            return;
        }

        // A binding copies what is published from now on: the group starts reading the topic at its current end.
        await StartGroupAtEndAsync(_options.GroupIdPrefix + queue, topic, cancellationToken).ConfigureAwait(false);
        var topics = _bindings.AddOrUpdate(queue, _ => before.Add(topic), (_, set) => set.Add(topic));
        var running = Consumers.Where(c => c.Queue == queue).ToList();
        if (running.Count > 0)
        {
            // Delayed publishes to the topic need a relay wherever it is consumed.
            await EnsureRelayAsync(topic, cancellationToken).ConfigureAwait(false);
        }

        foreach (var consumer in running)
        {
            consumer.Resubscribe(TopicsOf(queue, topics));
        }
    }

    /// <inheritdoc />
    public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        ProduceCheckedAsync(queue, nameof(queue), envelope, options, cancellationToken);

    /// <inheritdoc />
    public ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
        ProduceCheckedAsync(topic, nameof(topic), envelope, options, cancellationToken);

    /// <summary>A send or publish: the checks both make (envelope, name, size, delay), then the record produced.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ProduceCheckedAsync(string name, string paramName, Envelope envelope, SendOptions? options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        ValidateName(name, paramName);
        CheckSize(envelope);
        TransportArguments.ThrowIfDelayTooLong(options, MaxDelay);
        await ConnectAsync(cancellationToken).ConfigureAwait(false);
        await ProduceEnvelopeAsync(name, envelope, options, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    protected override async ValueTask<KafkaConsumer> StartConsumerAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken)
    {
        var topics = TopicsOf(queue, _bindings.GetValueOrDefault(queue));
        foreach (var topic in topics)
        {
            await EnsureTopicAsync(topic, cancellationToken).ConfigureAwait(false);
            await EnsureRelayAsync(topic, cancellationToken).ConfigureAwait(false);
        }

        var consumer = await KafkaConsumer.StartAsync(this, queue, topics, options, handler, Logger, cancellationToken).ConfigureAwait(false);
        Log.ConsumerStarted(Logger, queue, consumer.GroupId, options.Prefetch, options.MaxConcurrency);
        return consumer;
    }

    /// <summary>Creates the producer and checks the cluster answers; fails naming the brokers when it does not.</summary>
    protected override async ValueTask ConnectCoreAsync(CancellationToken cancellationToken)
    {
        var config = new ProducerConfig
        {
            BootstrapServers = _options.BootstrapServers,
            ClientId = _options.ClientId,
            EnableIdempotence = true,
            Acks = Acks.All,
            MessageMaxBytes = _options.MaxMessageBytes + HeaderAllowance,

            // The Java client's placement of a key (murmur2), which Kafka Streams, Connect and kafkajs share: librdkafka's
            // own default (CRC32) puts a key on another partition than they do, splitting a key written from both sides.
            // Records without a key still spread at random. ConfigureProducer may choose otherwise.
            Partitioner = Confluent.Kafka.Partitioner.Murmur2Random,
        };
        _options.ConfigureProducer?.Invoke(config);

        // What Herald's guarantees rest on is not left to the hook: without delivery reports a send completes before the
        // cluster answered, and one it refused is lost without an error.
        config.EnableIdempotence = true;
        config.Acks = Acks.All;
        config.EnableDeliveryReports = true;
        var producer = new ProducerBuilder<byte[]?, byte[]>(config)
            .SetErrorHandler((_, error) => Log.ClientError(Logger, "producer", error.Code, error.Reason))
            .SetLogHandler((_, message) => Log.ClientLog(Logger, message.Name, message.Facility, message.Message))
            .Build();
        var admin = new DependentAdminClientBuilder(producer.Handle).Build();
        try
        {
            await Task.Run(() => admin.GetMetadata(TimeSpan.FromSeconds(10)), cancellationToken).ConfigureAwait(false);
        }
        catch (KafkaException e)
        {
            admin.Dispose();
            producer.Dispose();
            throw new HeraldException($"Could not reach Kafka at {_options.BootstrapServers}: {e.Error.Reason}", e);
        }
        catch
        {
            admin.Dispose();
            producer.Dispose();
            throw;
        }

        _producer = producer;
        _admin = admin;
        AdapterLog.Connected(Logger, "Kafka", _options.BootstrapServers);
    }

    /// <inheritdoc />
    protected override async ValueTask DisposeCoreAsync()
    {
        foreach (var relay in _relays.Values.Where(r => r.IsValueCreated))
        {
            await relay.Value.DisposeAsync().ConfigureAwait(false);
        }

        _admin?.Dispose();
        if (_producer is not null)
        {
            // Messages already accepted are confirmed (every send awaited its own), so nothing is left to flush but stragglers.
            _producer.Flush(TimeSpan.FromSeconds(5));
            _producer.Dispose();
        }
    }

    /// <summary>Produces a record and waits for the cluster's confirmation (all in-sync replicas).</summary>
    internal async ValueTask ProduceAsync(string topic, Message<byte[]?, byte[]> message, CancellationToken cancellationToken)
    {
        await EnsureTopicAsync(topic, cancellationToken).ConfigureAwait(false);
        try
        {
            await _producer!.ProduceAsync(topic, message, cancellationToken).ConfigureAwait(false);
        }
        catch (ProduceException<byte[]?, byte[]> e) when (e.Error.Code is ErrorCode.MsgSizeTooLarge or ErrorCode.TopicException or ErrorCode.InvalidMsg)
        {
            // The cluster will refuse it every time: not worth retrying.
            throw new MessageRejectedException($"Kafka refused a record for '{topic}': {e.Error.Reason}", e);
        }
        catch (ProduceException<byte[]?, byte[]> e) when (e.Error.Code is ErrorCode.Local_UnknownTopic or ErrorCode.UnknownTopicOrPart or ErrorCode.Local_UnknownPartition)
        {
            // Deleted since it was checked: the next produce checks it again, so it is made again (CreateTopics on) or
            // reported missing (off), instead of failing this way for as long as the process runs.
            ForgetTopic(topic);
            throw;
        }
    }

    /// <summary>A consumer builder with Herald's settings: manual commits, the group protocol, and the user's additions.</summary>
    internal ConsumerBuilder<byte[]?, byte[]> BuildConsumer(string groupId) => BuildConsumer(groupId, out _);

    /// <summary>As <see cref="BuildConsumer(string)"/>, also giving the settings the consumer is built with.</summary>
    internal ConsumerBuilder<byte[]?, byte[]> BuildConsumer(string groupId, out ConsumerConfig settings) => BuildConsumer(groupId, out settings, ownTopic: false);

    /// <summary>
    /// As <see cref="BuildConsumer(string)"/>, for a topic only Herald writes (a retry topic, a dead-letter topic): read from
    /// its start where the group has no offset (or it is out of range), whatever reset policy <see cref="KafkaTransportOptions.ConfigureConsumer"/>
    /// sets for the queues. A user's 'latest' made a retry partition nothing was relayed from yet start at its end after a
    /// restart, skipping the delayed records written to it meanwhile, whose originals were committed already.
    /// </summary>
    internal ConsumerBuilder<byte[]?, byte[]> BuildOwnTopicConsumer(string groupId) => BuildConsumer(groupId, out _, ownTopic: true);

    private ConsumerBuilder<byte[]?, byte[]> BuildConsumer(string groupId, out ConsumerConfig settings, bool ownTopic)
    {
        var config = new ConsumerConfig
        {
            BootstrapServers = _options.BootstrapServers,
            ClientId = _options.ClientId,
            GroupId = groupId,
            EnableAutoCommit = false,
            EnableAutoOffsetStore = false,
            AutoOffsetReset = AutoOffsetReset.Earliest,
            IsolationLevel = IsolationLevel.ReadCommitted,
            AllowAutoCreateTopics = false,
        };
        if (_options.GroupProtocol == KafkaGroupProtocol.Consumer)
        {
            config.Set("group.protocol", "consumer");
        }
        else
        {
            config.PartitionAssignmentStrategy = PartitionAssignmentStrategy.CooperativeSticky;
        }

        _options.ConfigureConsumer?.Invoke(config);
        config.EnableAutoCommit = false;
        if (ownTopic)
        {
            config.AutoOffsetReset = AutoOffsetReset.Earliest;
        }

        settings = config;
        return new ConsumerBuilder<byte[]?, byte[]>(config)
            .SetLogHandler((_, message) => Log.ClientLog(Logger, message.Name, message.Facility, message.Message));
    }

    internal void Forget(KafkaConsumer consumer) => Untrack(consumer);

    /// <summary>The relay of <paramref name="retryTopic"/>, once started.</summary>
    internal RetryRelay? RelayOf(string retryTopic) => _relays.TryGetValue(retryTopic, out var relay) && relay.IsValueCreated ? relay.Value : null;

    /// <summary>
    /// The partitions a rebalance assigned during the last poll that the client still holds, or null; clears
    /// <paramref name="assignedInPoll"/>. Their pause state is the caller's to set: librdkafka keeps a partition's pause
    /// across its revocation, so one given up while paused comes back paused.
    /// </summary>
    internal static List<TopicPartition>? TakeAssigned(IConsumer<byte[]?, byte[]> consumer, ref List<TopicPartition>? assignedInPoll)
    {
        if (assignedInPoll is not { } assigned)
        {
            return null;
        }

        assignedInPoll = null;
        var held = consumer.Assignment.ToHashSet();
        var still = assigned.Where(held.Contains).ToList();
        return still.Count == 0 ? null : still;
    }

    /// <summary>
    /// Takes a group member out of its group and closes it: unsubscribes, polls (handing nothing on, committing nothing) until
    /// the client gave its partitions up, for at most about ten seconds, then closes. librdkafka's close never returns when
    /// an assignment reaches it while it closes (its rebalance callback's assign waits for good: confluentinc/librdkafka#4884,
    /// open; a member leaving while the group hands partitions around, as KIP-848 groups do incrementally). After the
    /// unsubscribe no assignment comes, so the close only leaves a group in which the member holds nothing. The revocation
    /// the unsubscribe brings is served by these polls, as a rebalance's is.
    /// </summary>
    internal static void LeaveGroup(IConsumer<byte[]?, byte[]> consumer, ILogger logger, string owner)
    {
        consumer.Unsubscribe();
        for (var polls = 0; polls < 100 && consumer.Assignment.Count > 0; polls++)
        {
            // A record fetched before the unsubscribe is dropped: it is not committed, so the partition's next owner reads it.
            _ = Poll(consumer, TimeSpan.FromMilliseconds(100), logger, owner);
        }

        consumer.Close();
    }

    /// <summary>One poll of a Herald consumer: the next record, or null (none yet, end of a partition, or an error, logged).</summary>
    internal static ConsumeResult<byte[]?, byte[]>? Poll(IConsumer<byte[]?, byte[]> consumer, TimeSpan timeout, ILogger logger, string owner)
    {
        ConsumeResult<byte[]?, byte[]>? result;
        try
        {
            result = consumer.Consume(timeout);
        }
        catch (ConsumeException e)
        {
            Log.ConsumeFailed(logger, owner, e.Error.Code, e.Error.Reason);
            return null;
        }

        return result is null || result.IsPartitionEOF || result.Message is null ? null : result;
    }

    private async ValueTask ProduceEnvelopeAsync(string destination, Envelope envelope, SendOptions? options, CancellationToken cancellationToken)
    {
        var message = KafkaEnvelopeCodec.Encode(envelope, _options.Source);
        if (options?.Delay is { } delay && delay > TimeSpan.Zero)
        {
            // Held in the destination's retry topic until due, then relayed to it by whoever consumes it.
            message.Headers.Add(KafkaEnvelopeCodec.DueHeader, Encoding.UTF8.GetBytes((TimeProvider.GetUtcNow() + delay).ToUnixTimeMilliseconds().ToString(System.Globalization.CultureInfo.InvariantCulture)));
            message.Headers.Add(KafkaEnvelopeCodec.TargetHeader, Encoding.UTF8.GetBytes(destination));
            await ProduceAsync(_options.RetryTopicName(destination), message, cancellationToken).ConfigureAwait(false);
            return;
        }

        await ProduceAsync(destination, message, cancellationToken).ConfigureAwait(false);
    }

    private string[] TopicsOf(string queue, ImmutableSortedSet<string>? bound) =>
        bound is null ? [queue] : [queue, .. bound.Where(t => t != queue)];

    private async ValueTask EnsureRelayAsync(string topic, CancellationToken cancellationToken)
    {
        var retryTopic = _options.RetryTopicName(topic);
        await EnsureTopicAsync(retryTopic, cancellationToken).ConfigureAwait(false);
        _ = _relays.GetOrAdd(retryTopic, name => new Lazy<RetryRelay>(() => new RetryRelay(this, name, Logger))).Value;
    }

    /// <summary>Whether Kafka accepts <paramref name="name"/> as a topic name.</summary>
    internal static bool IsValidTopicName(string name)
    {
        if (name.Length is 0 or > MaxTopicNameLength || name is "." or "..")
        {
            return false;
        }

        // A loop, not LINQ: the relay checks every record it reads, and a string's enumerator is boxed.
        foreach (var c in name)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('.' or '_' or '-'))
            {
                return false;
            }
        }

        return true;
    }

    private void CheckSize(Envelope envelope) => TransportArguments.ThrowIfTooLarge(envelope, _options.MaxMessageBytes);

    private static void ValidateName(string name, string parameter)
    {
        ArgumentException.ThrowIfNullOrEmpty(name, parameter);
        if (!IsValidTopicName(name))
        {
            throw new ArgumentException($"'{name}' is not a valid Kafka topic name: 1 to {MaxTopicNameLength} characters of [a-zA-Z0-9._-].", parameter);
        }
    }

    // Room for the CloudEvents headers and Herald's bookkeeping on top of the largest body accepted.
    private const int HeaderAllowance = 64 * 1024;
}
