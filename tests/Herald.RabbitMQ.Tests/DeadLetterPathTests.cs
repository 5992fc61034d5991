using System.Collections.Concurrent;
using System.Text;
using Herald.Conformance;
using Herald.Conformance.Reliability;
using Herald.Handling;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// The one dead-letter path on a real broker: whatever a plain AMQP client sends that cannot be handled lands in the
/// dead-letter store (seen through the DeadLetterManager) with its reason, the good messages behind it are handled, and
/// the queue's own dead-letter queue is only the fallback while the store is down, drained into it afterwards.
/// </summary>
public sealed class DeadLetterPathTests : RabbitMqTestBase
{
    [Fact]
    public async Task PoisonFromAPlainClient_FarFutureTimestamp_GarbageHeaders_ThrowingConstructor_IsDeadLetteredOnceWithItsReason_AndGoodMessagesAreHandled_Issue10()
    {
        var probe = new Probe();
        using var host = await StartHostAsync(probe);
        var channel = await CreateRawChannelAsync();
        var endpoint = Name("endpoint");
        var now = new AmqpTimestamp(DateTimeOffset.UtcNow.ToUnixTimeSeconds());

        // (a) raw JSON whose AMQP timestamp lies beyond any DateTimeOffset (in seconds and in milliseconds).
        await PublishAsync(channel, endpoint, new BasicProperties { MessageId = "far-future", Timestamp = new AmqpTimestamp(9_000_000_000_000_000) }, """{"quantity":1}""");

        // (b) CloudEvents headers of the wrong kinds: an id that is no Guid, a type that is a number, a time that is a table.
        await PublishAsync(channel, endpoint, new BasicProperties
        {
            Headers = new Dictionary<string, object?>
            {
                ["cloudEvents:specversion"] = "1.0",
                ["cloudEvents:id"] = "garbage-id",
                ["cloudEvents:type"] = 42,
                ["cloudEvents:time"] = new Dictionary<string, object?> { ["nested"] = 1 },
                ["cloudEvents:partitionkey"] = new byte[] { 0xFF, 0xFE, 0x00 },
            },
        }, """{"quantity":2}""");

        // (c) a body whose message type refuses it in its constructor (an ArgumentException, not a JsonException).
        await PublishAsync(channel, endpoint, new BasicProperties { MessageId = "negative", Timestamp = now }, """{"quantity":-1}""");

        // Good messages behind them.
        for (var quantity = 10; quantity < 13; quantity++)
        {
            await PublishAsync(channel, endpoint, new BasicProperties { MessageId = Guid.NewGuid().ToString(), Timestamp = now }, $$"""{"quantity":{{quantity}}}""");
        }

        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        await Herald.Conformance.Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = endpoint }) >= 3, "three dead letters are stored");
        await Herald.Conformance.Eventually.UntilAsync(() => probe.Handled.Count >= 3, "the good messages are handled");

        var deadLetters = (await manager.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Items;
        Assert.Equal(3, deadLetters.Count);
        Assert.All(deadLetters, d =>
        {
            Assert.Equal(DeadLetterCause.Undecodable, d.Cause);
            Assert.Equal((1, 1), (d.AttemptCount, d.Envelope.DeliveryAttempt));
        });
        var farFuture = Assert.Single(deadLetters, d => d.ErrorMessage.Contains("timestamp", StringComparison.Ordinal));
        Assert.Equal(typeof(Herald.Transport.MalformedMessageException).FullName, farFuture.ErrorType);
        Assert.Equal("""{"quantity":1}""", Encoding.UTF8.GetString(farFuture.Envelope.Body.Span));
        Assert.Contains(deadLetters, d => d.ErrorMessage.Contains("garbage-id", StringComparison.Ordinal) && d.ErrorMessage.Contains("not a Guid", StringComparison.Ordinal));
        var refused = Assert.Single(deadLetters, d => d.ErrorType == typeof(MessageDeserializationException).FullName);
        Assert.Contains("quantity must be positive", refused.ErrorMessage, StringComparison.Ordinal);

        Assert.Equal([10, 11, 12], probe.Handled.Order());
        await host.StopAsync();

        // Nothing was left unsettled (a stopped consumer's unacked deliveries go back to the queue), nothing went native.
        Assert.Equal(0u, (await channel.QueueDeclarePassiveAsync(endpoint)).MessageCount);
        Assert.DoesNotContain(endpoint + ".dead-letter", await BrokerAdmin.QueueNamesAsync(Prefix));
        Assert.Equal(3, await manager.CountAsync(new DeadLetterQuery { Endpoint = endpoint }));
    }

    [Fact]
    public async Task DeadLetterStoreDown_PoisonGoesToTheNativeDeadLetterQueue_AndIsDrainedIntoTheStoreOnceItIsBack()
    {
        var probe = new Probe();
        var store = new FaultyDeadLetterStore { Failing = true };
        using var host = await StartHostAsync(probe, store);
        var channel = await CreateRawChannelAsync();
        var endpoint = Name("endpoint");
        var deadLetterQueue = endpoint + ".dead-letter";
        var now = new AmqpTimestamp(DateTimeOffset.UtcNow.ToUnixTimeSeconds());

        await PublishAsync(channel, endpoint, new BasicProperties { MessageId = "poison", Timestamp = now }, """{"quantity":-5}""");
        await PublishAsync(channel, endpoint, new BasicProperties { MessageId = Guid.NewGuid().ToString(), Timestamp = now }, """{"quantity":7}""");

        await Herald.Conformance.Eventually.UntilAsync(() => probe.Handled.Contains(7), "the good message is handled");
        await Herald.Conformance.Eventually.UntilAsync(
            async () => await BrokerAdmin.QueueNamesAsync(Prefix) is var names && names.Contains(deadLetterQueue) && (await channel.QueueDeclarePassiveAsync(deadLetterQueue)).MessageCount == 1,
            "the poison message waits in the native dead-letter queue");
        await Herald.Conformance.Eventually.UntilAsync(() => store.Refused >= 2, "the drain tries the store while it is down");

        // A drain holds the message only while it tries the store; refused, it hands it back.
        await Herald.Conformance.Eventually.UntilAsync(
            async () => (await channel.QueueDeclarePassiveAsync(deadLetterQueue)).MessageCount == 1, "the refused message is back in the dead-letter queue");
        Assert.Equal(0, await store.CountAsync(DeadLetterQuery.All));

        store.Failing = false;
        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        await Herald.Conformance.Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = endpoint }) == 1, "the drain moves it into the store");
        Assert.Equal(0u, (await channel.QueueDeclarePassiveAsync(deadLetterQueue)).MessageCount);

        var deadLetter = Assert.Single((await manager.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Items);
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.Equal(typeof(MessageDeserializationException).FullName, deadLetter.ErrorType);
        Assert.Contains("quantity must be positive", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal((1, 1), (deadLetter.AttemptCount, deadLetter.Envelope.DeliveryAttempt));
        Assert.Equal("""{"quantity":-5}""", Encoding.UTF8.GetString(deadLetter.Envelope.Body.Span));
        Assert.Null(deadLetter.Envelope.GetHeader(HeaderNames.DeadLetterReason));
        Assert.Equal([7], probe.Handled);
    }

    [Fact]
    public async Task DeadLetterTheStoreKeepsRefusing_StaysInTheDeadLetterQueue_AndTheOnesBehindItAreDrainedIntoTheStore()
    {
        var (probe, store) = (new Probe(), new FaultyDeadLetterStore { Failing = true });
        using var host = await StartHostAsync(probe, store);
        var channel = await CreateRawChannelAsync();
        var endpoint = Name("endpoint");
        var deadLetterQueue = endpoint + ".dead-letter";
        async Task<uint> WaitingAsync() =>
            (await BrokerAdmin.QueueNamesAsync(Prefix)).Contains(deadLetterQueue) ? (await channel.QueueDeclarePassiveAsync(deadLetterQueue)).MessageCount : 0;
        Task PublishQuantityAsync(int quantity) => PublishAsync(
            channel, endpoint, new BasicProperties { MessageId = Guid.NewGuid().ToString(), Timestamp = new AmqpTimestamp(DateTimeOffset.UtcNow.ToUnixTimeSeconds()) }, $$"""{"quantity":{{quantity}}}""");

        // Three poisons wait in the dead-letter queue while the store is down, the one it will reject for good at the head.
        await PublishQuantityAsync(-5);
        await Herald.Conformance.Eventually.UntilAsync(async () => await WaitingAsync() == 1, "the first poison waits in the dead-letter queue");
        await PublishQuantityAsync(-6);
        await PublishQuantityAsync(-7);
        await Herald.Conformance.Eventually.UntilAsync(async () => await WaitingAsync() == 3, "all three wait in the dead-letter queue");

        store.Refuses = d => Encoding.UTF8.GetString(d.Envelope.Body.Span) == """{"quantity":-5}""";
        store.Failing = false;
        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        await Herald.Conformance.Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = endpoint }) == 2, "the drain moves the two behind the refused one");
        var refused = store.Refused;
        await Herald.Conformance.Eventually.UntilAsync(() => store.Refused > refused + 1, "later rounds try the refused one again");
        await host.StopAsync();

        // The refused one is back in the dead-letter queue, and only it. A round the stop cut short hands it back with a
        // nack (or its channel's close), which the broker applies after the stop returned: counted once it is back.
        await Herald.Conformance.Eventually.UntilAsync(
            async () => (await channel.QueueDeclarePassiveAsync(deadLetterQueue)).MessageCount >= 1, "the refused one is back in the dead-letter queue");
        Assert.Equal(1u, (await channel.QueueDeclarePassiveAsync(deadLetterQueue)).MessageCount);
        var left = await channel.BasicGetAsync(deadLetterQueue, autoAck: false);
        Assert.Equal("""{"quantity":-5}""", Encoding.UTF8.GetString(left!.Body.Span));
        await channel.BasicNackAsync(left.DeliveryTag, multiple: false, requeue: true);
        var stored = (await manager.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Items;
        Assert.Equal(["""{"quantity":-6}""", """{"quantity":-7}"""], stored.Select(d => Encoding.UTF8.GetString(d.Envelope.Body.Span)).Order());
        Assert.Empty(probe.Handled);
    }

    [Fact]
    public async Task UndecodableMessage_AckLostAfterTheStoreTookItsDeadLetter_IsStoredOnce_WhenRedelivered()
    {
        // The consume connection dies right after the store took the dead letter, before the ack: the broker delivers the
        // message again, and its dead letter must not be stored a second time (docs/reliability.md: a redelivery whose ack
        // was lost after the store took its dead letter gets the same id, and the store holds it once).
        var store = new AckLosingDeadLetterStore(Prefix + ":consume");
        using var host = await StartHostAsync(new Probe(), store);
        var channel = await CreateRawChannelAsync();
        var endpoint = Name("endpoint");

        await PublishAsync(channel, endpoint, new BasicProperties { MessageId = Guid.CreateVersion7().ToString("D"), Timestamp = new AmqpTimestamp(9_000_000_000_000_000) }, """{"quantity":1}""");

        await Herald.Conformance.Eventually.UntilAsync(() => store.Adds >= 2, "the redelivered message is dead-lettered again");
        await Herald.Conformance.Eventually.UntilAsync(
            async () => (await BrokerAdmin.QueueCountsAsync(endpoint)).All(q => q.Ready == 0 && q.Unacked == 0), "the queue is settled");
        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        var deadLetter = Assert.Single((await manager.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Items);
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
    }

    /// <summary>A dead-letter store that, after it took the first dead letter, kills the consuming connection (the ack is lost).</summary>
    private sealed class AckLosingDeadLetterStore(string connection) : IDeadLetterStore
    {
        private readonly InMemoryDeadLetterStore _inner = new();
        private int _adds;

        public int Adds => Volatile.Read(ref _adds);

        public async ValueTask<bool> AddAsync(DeadLetter deadLetter, CancellationToken cancellationToken = default)
        {
            var added = await _inner.AddAsync(deadLetter, cancellationToken);
            if (Interlocked.Increment(ref _adds) == 1)
            {
                await BrokerAdmin.KillConnectionsAsync(connection);
            }

            return added;
        }

        public ValueTask AddAsync(DeadLetter deadLetter, Herald.Persistence.IUnitOfWork unitOfWork, Action<bool>? added = null, CancellationToken cancellationToken = default) =>
            _inner.AddAsync(deadLetter, unitOfWork, added, cancellationToken);

        public ValueTask<DeadLetter?> GetAsync(Guid id, CancellationToken cancellationToken = default) => _inner.GetAsync(id, cancellationToken);

        public ValueTask<IReadOnlyList<DeadLetter>> ListAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => _inner.ListAsync(query, cancellationToken);

        public ValueTask<long> CountAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => _inner.CountAsync(query, cancellationToken);

        public ValueTask<bool> DeleteAsync(Guid id, CancellationToken cancellationToken = default) => _inner.DeleteAsync(id, cancellationToken);

        public ValueTask DeleteAsync(Guid id, Herald.Persistence.IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) => _inner.DeleteAsync(id, unitOfWork, cancellationToken);

        public ValueTask<int> DeleteManyAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => _inner.DeleteManyAsync(query, cancellationToken);

        public ValueTask<bool> RecordRetryFailureAsync(Guid id, string error, DateTimeOffset time, CancellationToken cancellationToken = default) =>
            _inner.RecordRetryFailureAsync(id, error, time, cancellationToken);
    }

    // Issue 10: the transport's own dead letters had no retention.
    [Fact]
    public async Task DeadLetterQueueMaxLength_DropHead_KeepsTheNewestDeadLettersOnly_Issue10()
    {
        var probe = new Probe();
        var store = new FaultyDeadLetterStore { Failing = true };
        // No drain: a drain round holds dead letters unacked, out of the length limit's count (see below).
        using var host = await StartHostAsync(
            probe,
            store,
            o =>
            {
                o.DeadLetterQueueMaxLength = 2;
                o.DeadLetterQueueOverflow = Herald.RabbitMQ.Transport.RabbitMqOverflow.DropHead;
            },
            drainInterval: TimeSpan.FromHours(1));
        var channel = await CreateRawChannelAsync();
        var endpoint = Name("endpoint");
        var deadLetterQueue = endpoint + ".dead-letter";
        var now = new AmqpTimestamp(DateTimeOffset.UtcNow.ToUnixTimeSeconds());

        for (var i = 1; i <= 4; i++)
        {
            await PublishAsync(channel, endpoint, new BasicProperties { MessageId = $"poison-{i}", Timestamp = now }, """{"quantity":-1}""");
        }

        await PublishAsync(channel, endpoint, new BasicProperties { MessageId = Guid.NewGuid().ToString(), Timestamp = now }, """{"quantity":5}""");
        await Herald.Conformance.Eventually.UntilAsync(() => probe.Handled.Contains(5), "the good message is handled");
        await Herald.Conformance.Eventually.UntilAsync(
            async () => (await channel.QueueDeclarePassiveAsync(endpoint)).MessageCount == 0, "every poison message left the queue");

        var arguments = (await BrokerAdmin.QueueArgumentsAsync(deadLetterQueue)).GetProperty("arguments");
        Assert.Equal(2, arguments.GetProperty("x-max-length").GetInt32());
        Assert.Equal("drop-head", arguments.GetProperty("x-overflow").GetString());
        await Herald.Conformance.Eventually.UntilAsync(
            async () => (await channel.QueueDeclarePassiveAsync(deadLetterQueue)).MessageCount == 2, "the dead-letter queue holds the newest two");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)] // Sends unconfirmed: the dead letter the full queue refused was not seen, and its original was acked.
    public async Task DeadLetterQueueMaxLength_RejectPublish_LosesNothing_TheOverflowWaitsInItsQueueUntilTheStoreIsBack_Issue10(bool publisherConfirms)
    {
        var probe = new Probe();
        var store = new FaultyDeadLetterStore { Failing = true };
        // No drain while the store refuses: a drain round holds the dead-letter queue's message unacked, which the length
        // limit does not count, so the second could go in beside it. A host started after the store is back drains at start.
        void Configure(Herald.RabbitMQ.Transport.RabbitMqTransportOptions o)
        {
            o.DeadLetterQueueMaxLength = 1;
            o.PublisherConfirms = publisherConfirms;
        }

        var host = await StartHostAsync(probe, store, Configure, storeFailureRedelivery: TimeSpan.FromMilliseconds(100), drainInterval: TimeSpan.FromHours(1));
        var channel = await CreateRawChannelAsync();
        var endpoint = Name("endpoint");
        var deadLetterQueue = endpoint + ".dead-letter";
        var now = new AmqpTimestamp(DateTimeOffset.UtcNow.ToUnixTimeSeconds());

        await PublishAsync(channel, endpoint, new BasicProperties { MessageId = "poison-1", Timestamp = now }, """{"quantity":-1}""");
        await PublishAsync(channel, endpoint, new BasicProperties { MessageId = "poison-2", Timestamp = now }, """{"quantity":-2}""");

        await Herald.Conformance.Eventually.UntilAsync(
            async () => await BrokerAdmin.QueueNamesAsync(Prefix) is var names && names.Contains(deadLetterQueue) && (await channel.QueueDeclarePassiveAsync(deadLetterQueue)).MessageCount == 1,
            "one dead letter fills the dead-letter queue");
        Assert.Equal("reject-publish", (await BrokerAdmin.QueueArgumentsAsync(deadLetterQueue)).GetProperty("arguments").GetProperty("x-overflow").GetString());
        Assert.Equal(0, await store.CountAsync(DeadLetterQuery.All));

        store.Failing = false;
        await host.StopAsync();
        host.Dispose();
        using var restarted = await StartHostAsync(probe, store, Configure, storeFailureRedelivery: TimeSpan.FromMilliseconds(100), drainInterval: TimeSpan.FromHours(1));
        var manager = restarted.Services.GetRequiredService<DeadLetterManager>();
        await Herald.Conformance.Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = endpoint }) == 2, "both reach the store: none was lost");
        await Herald.Conformance.Eventually.UntilAsync(async () => (await channel.QueueDeclarePassiveAsync(endpoint)).MessageCount == 0, "the queue is empty");
    }

    /// <summary>
    /// A message that both the dead-letter store and the dead-letter queue refused was handed back to the queue at once, so
    /// the broker redelivered it, and it failed again, as fast as the broker could: a redelivery loop for as long as both
    /// were down. It now waits one <c>NetworkRecoveryInterval</c> before it goes back, and still reaches the store. Its
    /// error 2008 said "it is redelivered in 00:00:00" all the same; it now names that wait.
    /// </summary>
    [Fact]
    public async Task RefusedByTheStoreAndTheDeadLetterQueue_GoesBackOnlyAfterARecoveryInterval_NoRedeliveryLoop_AndLogsThatWait()
    {
        var interval = TimeSpan.FromMilliseconds(500);
        var logs = new TestOutputLogger(LogLevel.Error);
        var refusals = new ConcurrentQueue<long>();
        var store = new FaultyDeadLetterStore
        {
            Failing = true,
            Refuses = d =>
            {
                // The second poison message: the first one filled the dead-letter queue, so this one loops.
                if (Encoding.UTF8.GetString(d.Envelope.Body.Span).Contains("-2", StringComparison.Ordinal))
                {
                    refusals.Enqueue(TimeProvider.System.GetTimestamp());
                }

                return false;
            },
        };
        // No drain while the store refuses: a drain round holds the dead-letter queue's message unacked, which the queue's
        // length limit does not count, so the second poison message could go into it, and the drain's own refusals of it
        // (a few ms apart) were taken for redeliveries. A host started after the store is back drains at its start.
        void Configure(Herald.RabbitMQ.Transport.RabbitMqTransportOptions o)
        {
            o.DeadLetterQueueMaxLength = 1;
            o.NetworkRecoveryInterval = interval;
        }

        var host = await StartHostAsync(new Probe(), store, Configure, logs: logs, drainInterval: TimeSpan.FromHours(1));
        var channel = await CreateRawChannelAsync();
        var endpoint = Name("endpoint");
        var now = new AmqpTimestamp(DateTimeOffset.UtcNow.ToUnixTimeSeconds());

        await PublishAsync(channel, endpoint, new BasicProperties { MessageId = "poison-1", Timestamp = now }, """{"quantity":-1}""");
        await Herald.Conformance.Eventually.UntilAsync(
            async () => await BrokerAdmin.QueueNamesAsync(Prefix) is var names && names.Contains(endpoint + ".dead-letter") && (await channel.QueueDeclarePassiveAsync(endpoint + ".dead-letter")).MessageCount == 1,
            "the first dead letter fills the dead-letter queue");
        await PublishAsync(channel, endpoint, new BasicProperties { MessageId = "poison-2", Timestamp = now }, """{"quantity":-2}""");

        await Herald.Conformance.Eventually.UntilAsync(() => refusals.Count >= 3, "the second one is refused three times");
        var times = refusals.ToArray();
        for (var i = 1; i < 3; i++)
        {
            var gap = TimeProvider.System.GetElapsedTime(times[i - 1], times[i]);
            Assert.True(gap >= interval * 0.9, $"redelivered {gap.TotalMilliseconds:F0} ms after it was refused, not after the {interval.TotalMilliseconds} ms recovery interval");
        }

        var refusedTwice = logs.ToString().Split('\n').Where(l => l.Contains("could not be moved to the transport's own dead letters", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(refusedTwice);
        Assert.All(refusedTwice, l => Assert.True(l.Contains($"it is redelivered in {interval}", StringComparison.Ordinal), l));

        store.Failing = false;
        await host.StopAsync();
        host.Dispose();
        using var restarted = await StartHostAsync(new Probe(), store, Configure, drainInterval: TimeSpan.FromHours(1));
        var manager = restarted.Services.GetRequiredService<DeadLetterManager>();
        await Herald.Conformance.Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = endpoint }) == 2, "both reach the store: none was lost");
    }

    // Stop 40: on a quorum queue, a message the broker delivered MaxDeliveries times without it being settled (each time
    // a consumer went away while holding it, as a crashing process does) goes to the dead-letter store with the count and
    // the likely causes, through the pipeline's one dead-letter path, and its handler never runs.
    [Fact]
    public async Task OnAQuorumQueue_AMessageDeliveredMaxDeliveriesTimesUnsettled_IsStoredAsADeadLetterAndNotHandled()
    {
        var endpoint = Name("endpoint");
        var channel = await CreateRawChannelAsync();
        await channel.QueueDeclareAsync(endpoint, durable: true, exclusive: false, autoDelete: false, new Dictionary<string, object?> { ["x-queue-type"] = "quorum" });
        await PublishAsync(channel, endpoint, new BasicProperties { MessageId = Guid.NewGuid().ToString(), Timestamp = new AmqpTimestamp(DateTimeOffset.UtcNow.ToUnixTimeSeconds()) }, """{"quantity":7}""");
        for (var taken = 0; taken < 2; taken++)
        {
            // A consumer that takes the message and goes away without settling it: the broker counts one more delivery.
            var consumer = await CreateRawChannelAsync();
            var got = await Herald.Conformance.Eventually.ValueAsync(() => new ValueTask<BasicGetResult?>(consumer.BasicGetAsync(endpoint, autoAck: false)), "the message is there");
            Assert.Equal(taken > 0, got.Redelivered);
            await consumer.CloseAsync();
        }

        var probe = new Probe();
        using var host = await StartHostAsync(probe, configure: o =>
        {
            o.QueueType = Herald.RabbitMQ.Transport.RabbitMqQueueType.Quorum;
            o.MaxDeliveries = 2;
        });
        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        await Herald.Conformance.Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = endpoint }) >= 1, "the message is stored as a dead letter");
        var deadLetter = Assert.Single((await manager.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Items);
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.Contains("delivered 2 times without being settled", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Contains("consumer_timeout", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal("""{"quantity":7}""", Encoding.UTF8.GetString(deadLetter.Envelope.Body.Span));
        await host.StopAsync();

        Assert.Empty(probe.Handled);
        Assert.Equal(0u, (await channel.QueueDeclarePassiveAsync(endpoint)).MessageCount);
    }

    private async Task<IHost> StartHostAsync(Probe probe, IDeadLetterStore? store = null, Action<Herald.RabbitMQ.Transport.RabbitMqTransportOptions>? configure = null, TimeSpan? storeFailureRedelivery = null, ILoggerProvider? logs = null, TimeSpan? drainInterval = null)
    {
        var endpoint = Name("endpoint");
        var builder = Host.CreateApplicationBuilder();
        if (logs is not null)
        {
            builder.Logging.AddProvider(logs);
        }

        builder.Services.AddSingleton(probe);
        builder.Services.AddHerald(h => h
            .UseRabbitMq(o =>
            {
                o.ConnectionUri = BrokerAdmin.AmqpUri;
                o.ClientProvidedName = Prefix;
                o.RawQueues[endpoint] = Name("quantity");
                configure?.Invoke(o);
            })
            .AddMessageType<Order>(Name("quantity"))
            .AddHandler<QuantityHandler>()
            .ConfigureRetries(r => r.Immediate(1).Delayed(1, TimeSpan.FromMilliseconds(50), TimeSpan.FromMilliseconds(100)))
            .ConfigureDeadLetters(o =>
            {
                o.DrainInterval = drainInterval ?? TimeSpan.FromMilliseconds(200);
                o.StoreFailureRedeliveryDelay = storeFailureRedelivery ?? o.StoreFailureRedeliveryDelay;
            })
            .Configure(o =>
            {
                o.EndpointName = endpoint;
                o.MaxConcurrency = 2;
            }));
        if (store is not null)
        {
            builder.Services.AddSingleton(store);
        }

        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    private static async Task PublishAsync(IChannel channel, string queue, BasicProperties properties, string json) =>
        await channel.BasicPublishAsync(string.Empty, queue, mandatory: false, properties, Encoding.UTF8.GetBytes(json));

    /// <summary>A message type that validates in its constructor, as records with guard clauses do.</summary>
    public sealed record Order
    {
        public Order(int quantity)
        {
            if (quantity <= 0)
            {
                throw new ArgumentException("quantity must be positive", nameof(quantity));
            }

            Quantity = quantity;
        }

        public int Quantity { get; }
    }

    public sealed class Probe
    {
        private readonly ConcurrentQueue<int> _handled = new();

        public IReadOnlyList<int> Handled => [.. _handled];

        public void Add(int quantity) => _handled.Enqueue(quantity);
    }

    public sealed class QuantityHandler(Probe probe) : IMessageHandler<Order>
    {
        public ValueTask HandleAsync(Order message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Add(message.Quantity);
            return ValueTask.CompletedTask;
        }
    }
}
