using System.Collections.Concurrent;
using System.Text;
using Confluent.Kafka;
using Herald.Conformance;
using Herald.Conformance.Reliability;
using Herald.Handling;
using Herald.Hosting;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.Kafka.Tests;

/// <summary>
/// The one dead-letter path on Kafka, through a Herald host: a failing handler's message goes through the retry topic
/// (non-blocking: the partition moves on meanwhile) and then into the dead-letter store, from which the manager moves it
/// back; records a plain client writes that cannot be decoded are dead-lettered with their reason and never wedge their
/// partition; and the dead-letter topic is only the fallback while the store is down, drained into it afterwards.
/// </summary>
public sealed class DeadLetterPathTests : KafkaTestBase
{
    private const string OrderType = "kafka-order";
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task UseKafka_PublishedMessage_ReachesTheHandlerThroughTheCluster()
    {
        var probe = new Probe();
        using var host = await StartHostAsync(Name("endpoint"), probe);
        Assert.Equal("kafka", host.Services.GetRequiredService<ITransport>().Name);
        await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new Order(3));
        await Eventually.UntilAsync(() => probe.Handled.Contains(3), "the handler got the message", Deadline);
        await host.StopAsync();
    }

    [Fact]
    public async Task UseKafka_WithInvalidOptions_FailsTheHostStartListingTheProblems()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h.UseKafka(o =>
        {
            o.TopicPartitions = 0;
            o.StartPosition = Herald.Kafka.Transport.KafkaStartPosition.Timestamp;
        }));
        using var host = builder.Build();
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains(error.Failures, f => f.Contains("BootstrapServers", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.Contains("TopicPartitions", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.Contains("StartTimestamp", StringComparison.Ordinal));
    }

    [Fact]
    public async Task PoisonMessage_GoesThroughTheRetryTopic_ThenToTheDeadLetterStore_WithoutHoldingUpItsPartition_AndTheManagerMovesItBack()
    {
        var endpoint = Name("poison");
        var probe = new Probe { FailQuantity = 13 };
        using var host = await StartHostAsync(endpoint, probe);
        var bus = host.Services.GetRequiredService<IMessageBus>();

        // Same key: the same partition. The poison message goes first; the good one behind it must not wait for its retries.
        await bus.SendAsync(new Order(13), new DeliveryOptions { PartitionKey = "customer-1" });
        await bus.SendAsync(new Order(14), new DeliveryOptions { PartitionKey = "customer-1" });

        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        await Eventually.UntilAsync(() => probe.Handled.Contains(14), "the message behind the poison one is handled", Deadline);
        await Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = endpoint }) == 1, "the poison message is dead-lettered", Deadline);
        Assert.DoesNotContain(13, probe.Handled);
        Assert.True(probe.Failures.GetValueOrDefault(13) >= 3, $"one immediate retry and the delayed ones ran: {probe.Failures.GetValueOrDefault(13)} attempts");
        Assert.True(EndOffsets(endpoint + ".retry") >= 1, "the delayed retry went through the retry topic");
        Assert.Equal(0, EndOffsets(endpoint + ".dead-letter"));

        var deadLetter = Assert.Single((await manager.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Items);
        Assert.Equal(DeadLetterCause.RetriesExhausted, deadLetter.Cause);
        Assert.Contains("refuses 13", deadLetter.ErrorMessage, StringComparison.Ordinal);

        // The dead-letter manager sends it back to the endpoint's topic; now it is handled.
        probe.FailQuantity = null;
        Assert.Equal(DeadLetterRetryOutcome.Retried, await manager.RetryAsync(deadLetter.Id));
        await Eventually.UntilAsync(() => probe.Handled.Contains(13), "the moved-back message is handled", Deadline);
        await Eventually.UntilAsync(() => Uncommitted(endpoint, endpoint) == 0, "every offset committed", Deadline);
        await host.StopAsync();
    }

    [Fact]
    public async Task BadRecordsFromAPlainClient_AreDeadLetteredWithTheirReasons_AndNeverWedgeThePartition()
    {
        var endpoint = Name("bad-input");
        var probe = new Probe();
        using var host = await StartHostAsync(endpoint, probe);
        using var producer = RawProducer();
        var id = Guid.CreateVersion7().ToString();
        var time = DateTimeOffset.UtcNow.ToString("O");
        var key = Encoding.UTF8.GetBytes("one-key");

        // Every record on the same key, so on one partition, ahead of a good one.
        await RawAsync(producer, endpoint, key, "not json at all", ("ce_id", id), ("ce_type", OrderType), ("ce_time", time), ("ce_specversion", "1.0"));
        await RawAsync(producer, endpoint, key, """{"quantity":1}""", ("ce_id", Guid.NewGuid().ToString()), ("ce_type", "no-such-type"), ("ce_time", time));
        await RawAsync(producer, endpoint, key, """{"quantity":2}""");
        await RawAsync(producer, endpoint, key, """{"quantity":3}""", ("ce_id", Guid.NewGuid().ToString()), ("ce_type", OrderType), ("ce_time", "2024-13-45T99:00:00Z"));
        await RawAsync(producer, endpoint, key, """{"quantity":4}""", ("ce_id", "garbage-id"), ("ce_type", OrderType), ("ce_time", time));
        await RawAsync(producer, endpoint, key, """{"quantity":5}""", ("ce_id", Guid.NewGuid().ToString()), ("ce_type", OrderType), ("ce_time", time), ("ce_partitionkey", "\uFFFD"));
        producer.Produce(endpoint, new Message<byte[]?, byte[]>
        {
            Key = key,
            Value = """{"quantity":6}"""u8.ToArray(),
            Headers = new Headers { { "ce_id", Encoding.UTF8.GetBytes(Guid.NewGuid().ToString()) }, { "ce_type", [0xFF, 0xFE] }, { "ce_time", Encoding.UTF8.GetBytes(time) } },
        });
        await RawAsync(producer, endpoint, null, """{"quantity":7}""", ("ce_id", Guid.NewGuid().ToString()), ("ce_type", OrderType), ("ce_time", time));
        await RawAsync(producer, endpoint, key, """{"quantity":8}""", ("ce_id", Guid.NewGuid().ToString()), ("ce_type", OrderType), ("ce_time", time));

        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        await Eventually.UntilAsync(() => probe.Handled.Contains(8) && probe.Handled.Contains(7) && probe.Handled.Contains(5), "the good records are handled (a null key too)", Deadline);
        await Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = endpoint }) == 6, "six dead letters", Deadline);
        await Eventually.UntilAsync(() => Uncommitted(endpoint, endpoint) == 0, "the partition moved past every bad record", Deadline);

        var deadLetters = (await manager.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Items;
        Assert.All(deadLetters, d =>
        {
            Assert.Contains(d.Cause, new[] { DeadLetterCause.Undecodable, DeadLetterCause.InvalidEnvelope, DeadLetterCause.UnknownMessageType });
            Assert.False(string.IsNullOrWhiteSpace(d.ErrorMessage));
            Assert.Equal(1, d.AttemptCount);
        });
        Assert.Contains(deadLetters, d => d.Envelope.MessageId == Guid.Parse(id));
        Assert.Contains(deadLetters, d => d.ErrorMessage.Contains("no id", StringComparison.Ordinal));
        Assert.Contains(deadLetters, d => d.ErrorMessage.Contains("2024-13-45", StringComparison.Ordinal));
        Assert.Contains(deadLetters, d => d.ErrorMessage.Contains("garbage-id", StringComparison.Ordinal));
        Assert.Contains(deadLetters, d => d.ErrorMessage.Contains("not UTF-8", StringComparison.Ordinal));
        Assert.Contains(deadLetters, d => d.Cause == DeadLetterCause.UnknownMessageType);
        Assert.Equal(0, EndOffsets(endpoint + ".dead-letter"));
        await host.StopAsync();
    }

    [Fact]
    public async Task DeadLetterStoreDown_PoisonGoesToTheDeadLetterTopic_AndIsDrainedIntoTheStoreOnceItIsBack()
    {
        var endpoint = Name("store-down");
        var probe = new Probe { FailQuantity = 21 };
        var store = new FaultyDeadLetterStore { Failing = true };
        using var host = await StartHostAsync(endpoint, probe, store);
        var bus = host.Services.GetRequiredService<IMessageBus>();
        await bus.SendAsync(new Order(21));
        await bus.SendAsync(new Order(22));

        await Eventually.UntilAsync(() => probe.Handled.Contains(22), "the good message is handled", Deadline);
        await Eventually.UntilAsync(() => EndOffsets(endpoint + ".dead-letter") == 1, "the poison message waits in the dead-letter topic", Deadline);
        await Eventually.UntilAsync(() => store.Refused >= 2, "the drain tries the store while it is down", Deadline);
        Assert.Equal(0, await store.CountAsync(DeadLetterQuery.All));

        store.Failing = false;
        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        await Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = endpoint }) == 1, "the drain moves it into the store", Deadline);
        var deadLetter = Assert.Single((await manager.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Items);
        Assert.Equal(DeadLetterCause.RetriesExhausted, deadLetter.Cause);
        Assert.Contains("refuses 21", deadLetter.ErrorMessage, StringComparison.Ordinal);
        await Eventually.UntilAsync(() => Uncommitted(endpoint + ".dead-letter", endpoint + ".dead-letter.drain") == 0, "the drain committed what it moved", Deadline);
        await host.StopAsync();
    }

    // Round 4 (native dead-letter drain): a dead letter without Herald's dead-letter id (another tool put it in the topic,
    // or the relay dead-lettered it) got a new id each time the drain read it, so one the store took while the drain never
    // heard (a lost answer, a crash before the commit) was stored again under another id: two dead letters, retried twice.
    [Fact]
    public async Task ADeadLetterWithoutHeraldsRecord_StoredWhileItsAnswerWasLost_IsStoredOnce()
    {
        var endpoint = Name("lost-answer");
        var deadLetterTopic = endpoint + ".dead-letter";
        var id = Guid.CreateVersion7();
        using (var producer = RawProducer())
        {
            await RawAsync(
                producer, deadLetterTopic, "k"u8.ToArray(), """{"quantity":5}""",
                ("ce_id", id.ToString()), ("ce_type", OrderType), ("ce_time", DateTimeOffset.UtcNow.ToString("O")), ("ce_specversion", "1.0"),
                ("x-herald-dead-letter-reason", "dead-lettered by another tool"));
        }

        var store = new FaultyDeadLetterStore { AnswersToLose = 1 };
        using var host = await StartHostAsync(endpoint, new Probe(), store);
        await Eventually.UntilAsync(() => Uncommitted(deadLetterTopic, deadLetterTopic + ".drain") == 0, "the drain committed the dead letter", Deadline);
        await host.StopAsync();

        Assert.Equal(1, store.Refused);
        var deadLetter = Assert.Single(await store.ListAsync(DeadLetterQuery.All));
        Assert.Equal(id, deadLetter.Envelope.MessageId);
        Assert.Equal("dead-lettered by another tool", deadLetter.ErrorMessage);
    }

    private static async Task RawAsync(IProducer<byte[]?, byte[]> producer, string topic, byte[]? key, string body, params (string Name, string Value)[] headers)
    {
        var kafkaHeaders = new Headers();
        foreach (var (name, value) in headers)
        {
            kafkaHeaders.Add(name, Encoding.UTF8.GetBytes(value));
        }

        await producer.ProduceAsync(topic, new Message<byte[]?, byte[]> { Key = key, Value = Encoding.UTF8.GetBytes(body), Headers = kafkaHeaders });
    }

    private static async Task<IHost> StartHostAsync(string endpoint, Probe probe, IDeadLetterStore? store = null)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(probe);
        builder.Services.AddHerald(h => h
            .UseKafka(ApplyTestOptions)
            .AddMessageType<Order>(OrderType)
            .AddHandler<OrderHandler>()
            .ConfigureRetries(r => r.Immediate(1).Delayed(2, TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(200)))
            .ConfigureDeadLetters(o => o.DrainInterval = TimeSpan.FromMilliseconds(200))
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

    /// <summary>A message type that validates in its constructor, as records with guard clauses do.</summary>
    public sealed record Order(int Quantity);

    public sealed class Probe
    {
        private readonly ConcurrentQueue<int> _handled = new();

        public IReadOnlyList<int> Handled => [.. _handled];

        public ConcurrentDictionary<int, int> Failures { get; } = new();

        public int? FailQuantity { get; set; }

        public void Add(int quantity) => _handled.Enqueue(quantity);
    }

    public sealed class OrderHandler(Probe probe) : IMessageHandler<Order>
    {
        public ValueTask HandleAsync(Order message, MessageContext context, CancellationToken cancellationToken)
        {
            if (probe.FailQuantity == message.Quantity)
            {
                probe.Failures.AddOrUpdate(message.Quantity, 1, (_, n) => n + 1);
                throw new InvalidOperationException($"The handler refuses {message.Quantity}.");
            }

            probe.Add(message.Quantity);
            return ValueTask.CompletedTask;
        }
    }
}
