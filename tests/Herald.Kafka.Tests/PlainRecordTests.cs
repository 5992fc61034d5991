using System.Collections.Concurrent;
using System.Text;
using Confluent.Kafka;
using Herald.Conformance;
using Herald.Handling;
using Herald.Hosting;
using Herald.Kafka.Transport;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Kafka.Tests;

/// <summary>
/// Records in the plain Kafka format other producers write (issue 14): keyed by aggregate id, with plain
/// <c>event-type</c> and <c>event-source</c> headers and a raw JSON value, no <c>ce_</c> headers. They are handled, with
/// an id derived from what they carry, so the same record sent again is a duplicate the inbox suppresses.
/// </summary>
public sealed class PlainRecordTests : KafkaTestBase
{
    private const string PlacedType = "order-placed";
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    [Fact]
    public void Decode_PlainRecord_TakesTypeSourceKeyAndTimeFromTheRecord_AndDerivesAStableId()
    {
        var timestamp = new DateTimeOffset(2031, 5, 17, 11, 45, 12, 345, TimeSpan.Zero);
        var record = Plain("order-7", """{"orderId":7}""", timestamp, PlacedType, "/legacy-orders");

        var envelope = KafkaEnvelopeCodec.Decode(record, "/herald", TimeProvider.System, out var failure);
        var again = KafkaEnvelopeCodec.Decode(Plain("order-7", """{"orderId":7}""", timestamp, PlacedType, "/legacy-orders"), "/herald", TimeProvider.System, out _);

        Assert.Null(failure);
        Assert.Equal(PlacedType, envelope.MessageType);
        Assert.Equal("/legacy-orders", envelope.GetHeader(HeaderNames.Source));
        Assert.Equal("order-7", envelope.PartitionKey);
        Assert.Equal(timestamp, envelope.Time);
        Assert.Equal(ContentTypes.Json, envelope.ContentType);
        Assert.Equal("""{"orderId":7}""", Encoding.UTF8.GetString(envelope.Body.Span));
        Assert.False(envelope.Headers.ContainsKey(KafkaEnvelopeCodec.PlainTypeHeader));
        Assert.Equal("tenant-a", envelope.GetHeader("tenant"));
        Assert.Equal(8, envelope.MessageId.Version);
        Assert.Equal(envelope.MessageId, again.MessageId);

        // Anything that makes it another record makes it another id: the value, the key, the producer's time, the type.
        Assert.NotEqual(envelope.MessageId, Id(Plain("order-7", """{"orderId":8}""", timestamp, PlacedType, "/legacy-orders")));
        Assert.NotEqual(envelope.MessageId, Id(Plain("order-8", """{"orderId":7}""", timestamp, PlacedType, "/legacy-orders")));
        Assert.NotEqual(envelope.MessageId, Id(Plain("order-7", """{"orderId":7}""", timestamp.AddMilliseconds(1), PlacedType, "/legacy-orders")));
        Assert.NotEqual(envelope.MessageId, Id(Plain("order-7", """{"orderId":7}""", timestamp, "order-paid", "/legacy-orders")));
        Assert.NotEqual(envelope.MessageId, Id(Plain("order-7", """{"orderId":7}""", timestamp, PlacedType, null)));

        static Guid Id(Message<byte[]?, byte[]> record) => KafkaEnvelopeCodec.Decode(record, "/herald", TimeProvider.System, out _).MessageId;
    }

    [Fact]
    public void Decode_RecordWithNeitherCloudEventsNorPlainHeaders_IsStillMalformed_NamingBoth()
    {
        var record = new Message<byte[]?, byte[]> { Key = "k"u8.ToArray(), Value = "{}"u8.ToArray(), Headers = [], Timestamp = new Timestamp(DateTime.UtcNow) };
        KafkaEnvelopeCodec.Decode(record, "/herald", TimeProvider.System, out var failure);
        Assert.NotNull(failure);
        Assert.Contains("event-type", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task PlainRecords_AreHandledOnce_TheSameRecordSentAgainIsSuppressedByTheInbox_AndAnUnknownTypeIsDeadLettered()
    {
        var endpoint = Name("plain");
        var probe = new Probe();
        using var host = await StartHostAsync(endpoint, probe);
        using var producer = RawProducer();
        var time = DateTimeOffset.UtcNow;

        // One key: one partition, in this order. The second record is the first sent again (a producer's retry).
        var first = Plain("order-1", """{"orderId":1}""", time, PlacedType, "/legacy-orders");
        await producer.ProduceAsync(endpoint, first);
        await producer.ProduceAsync(endpoint, Plain("order-1", """{"orderId":1}""", time, PlacedType, "/legacy-orders"));
        await producer.ProduceAsync(endpoint, Plain("order-1", """{"orderId":1}""", time, "order-teleported", "/legacy-orders"));
        await producer.ProduceAsync(endpoint, Plain("order-1", """{"orderId":2}""", time.AddMilliseconds(5), PlacedType, "/legacy-orders"));

        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        await Eventually.UntilAsync(() => probe.Handled.Any(h => h.OrderId == 2), "the record behind the others is handled", Deadline);
        await Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = endpoint }) == 1, "the unknown type is dead-lettered", Deadline);
        await Eventually.UntilAsync(() => Uncommitted(endpoint, endpoint) == 0, "every record is settled and committed", Deadline);

        Assert.Equal([1, 2], probe.Handled.Select(h => h.OrderId).Order());
        var handled = probe.Handled.Single(h => h.OrderId == 1);
        Assert.Equal(PlacedType, handled.Envelope.MessageType);
        Assert.Equal("order-1", handled.Envelope.PartitionKey);
        Assert.Equal("/legacy-orders", handled.Envelope.GetHeader(HeaderNames.Source));
        Assert.Equal(DateTimeOffset.FromUnixTimeMilliseconds(time.ToUnixTimeMilliseconds()), handled.Envelope.Time);

        var deadLetter = Assert.Single((await manager.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Items);
        Assert.Equal(DeadLetterCause.UnknownMessageType, deadLetter.Cause);
        Assert.Contains("order-teleported", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal("order-1", deadLetter.Envelope.PartitionKey);
        await host.StopAsync();
    }

    // Audit 41: a plain record's id is derived from its producer's timestamp, and every copy Herald makes of it (a nack's,
    // the retry relay's, a dead letter's) is a new record with a new timestamp: each redelivery was another message, with
    // another id and time. A copy made twice (the relay's produce confirmed and its commit lost, a nack's copy written though
    // its confirmation failed) was then two messages the inbox both handled. The copies now carry the original's time.
    [Fact]
    public async Task APlainRecordRedelivered_ThroughTheRetryTopicAndAtTheEndOfItsQueue_KeepsItsIdAndTime()
    {
        var queue = Name("plain-retry");
        var transport = await CreateTransportAsync();
        var time = DateTimeOffset.UtcNow.AddHours(-1);
        using (var producer = RawProducer())
        {
            await producer.ProduceAsync(queue, Plain("order-3", """{"orderId":3}""", time, PlacedType, "/legacy-orders"));
        }

        var seen = new ConcurrentQueue<Envelope>();
        Own(await transport.ConsumeAsync(queue, Herald.Transport.ConsumerOptions.Default, async (delivery, ct) =>
        {
            seen.Enqueue(delivery.Envelope);
            switch (delivery.Envelope.DeliveryAttempt)
            {
                case 1:
                    await delivery.NackAsync(TimeSpan.FromMilliseconds(100), ct);
                    break;
                case 2:
                    await delivery.NackAsync(TimeSpan.Zero, ct);
                    break;
            }
        }));

        await Eventually.UntilAsync(() => seen.Count >= 3, "the record comes back twice", Deadline);
        var attempts = seen.ToArray();
        Assert.Equal([1, 2, 3], attempts.Select(e => e.DeliveryAttempt));
        Assert.All(attempts, e => Assert.Equal(attempts[0].MessageId, e.MessageId));
        Assert.All(attempts, e => Assert.Equal(DateTimeOffset.FromUnixTimeMilliseconds(time.ToUnixTimeMilliseconds()), e.Time));
        Assert.All(attempts, e => Assert.Equal(PlacedType, e.MessageType));
        Assert.All(attempts, e => Assert.DoesNotContain(e.Headers.Keys, k => k.StartsWith("x-herald-", StringComparison.Ordinal)));
    }

    [Fact]
    public void Decode_APlainRecordsCopy_TakesItsTimeFromTheOriginal_AndLeavesAHeaderThatIsNoTimeAside()
    {
        var time = new DateTimeOffset(2031, 5, 17, 11, 45, 12, 345, TimeSpan.Zero);
        var original = Plain("order-7", """{"orderId":7}""", time, PlacedType, null);
        var copy = KafkaEnvelopeCodec.CopyForRepublish(original, [new(KafkaEnvelopeCodec.AttemptHeader, "2")], added: null);
        copy.Timestamp = new Timestamp(time.AddMinutes(5));
        var copyOfCopy = KafkaEnvelopeCodec.CopyForRepublish(copy, [new(KafkaEnvelopeCodec.AttemptHeader, "3")], added: null);
        copyOfCopy.Timestamp = new Timestamp(time.AddMinutes(9));

        var expected = KafkaEnvelopeCodec.Decode(original, "/herald", TimeProvider.System, out _);
        Assert.Equal(expected.MessageId, KafkaEnvelopeCodec.Decode(copy, "/herald", TimeProvider.System, out _).MessageId);
        Assert.Equal(time, KafkaEnvelopeCodec.Decode(copyOfCopy, "/herald", TimeProvider.System, out _).Time);
        Assert.Equal(expected.MessageId, KafkaEnvelopeCodec.Decode(copyOfCopy, "/herald", TimeProvider.System, out _).MessageId);

        var stray = Plain("order-7", """{"orderId":7}""", time, PlacedType, null);
        stray.Headers.Add(KafkaEnvelopeCodec.PlainTimeHeader, "soon"u8.ToArray());
        var read = KafkaEnvelopeCodec.Decode(stray, "/herald", TimeProvider.System, out var failure);
        Assert.Null(failure);
        Assert.Equal(expected.MessageId, read.MessageId);
    }

    private static Message<byte[]?, byte[]> Plain(string key, string json, DateTimeOffset time, string type, string? source)
    {
        var headers = new Headers { { "event-type", Encoding.UTF8.GetBytes(type) }, { "tenant", "tenant-a"u8.ToArray() } };
        if (source is not null)
        {
            headers.Add("event-source", Encoding.UTF8.GetBytes(source));
        }

        return new Message<byte[]?, byte[]>
        {
            Key = Encoding.UTF8.GetBytes(key),
            Value = Encoding.UTF8.GetBytes(json),
            Headers = headers,
            Timestamp = new Timestamp(time),
        };
    }

    private static async Task<IHost> StartHostAsync(string endpoint, Probe probe)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(probe);
        builder.Services.AddHerald(h => h
            .UseKafka(ApplyTestOptions)
            .AddMessageType<OrderPlaced>(PlacedType)
            .AddHandler<OrderPlacedHandler>()
            .UseInbox()
            .Configure(o =>
            {
                o.EndpointName = endpoint;
                o.MaxConcurrency = 2;
            }));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    public sealed record OrderPlaced(int OrderId);

    public sealed class Probe
    {
        private readonly ConcurrentQueue<(int OrderId, Envelope Envelope)> _handled = new();

        public IReadOnlyList<(int OrderId, Envelope Envelope)> Handled => [.. _handled];

        public void Add(int orderId, Envelope envelope) => _handled.Enqueue((orderId, envelope));
    }

    public sealed class OrderPlacedHandler(Probe probe) : IMessageHandler<OrderPlaced>
    {
        public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Add(message.OrderId, context.Envelope);
            return ValueTask.CompletedTask;
        }
    }
}
