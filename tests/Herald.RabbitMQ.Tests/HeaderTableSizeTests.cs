using Herald.Messages;
using Herald.RabbitMQ.Transport;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// The byte counts docs/rabbitmq.md ("On the wire") gives for the headers Herald writes, measured with RabbitMQ.Client's
/// own encoding of the content header (issue 9: the docs claim only what is tested). An AMQP field table is a 4-byte
/// length and then, per header, a short-string name (1 + its length), a type octet and the value (a long string: 4 + its
/// length); the doc counts the table after its length. No broker needed.
/// </summary>
public sealed class HeaderTableSizeTests
{
    // The bench's message type and Herald's default source (RabbitMqTransportOptions.Source).
    private const string MessageType = "order-placed";
    private const string Source = "/herald";

    [Fact]
    public void PlainMessage_CarriesTwoHeadersOf78Bytes_AndAppIdAdds8()
    {
        var envelope = new Envelope
        {
            MessageId = Guid.CreateVersion7(),
            MessageType = MessageType,
            Time = new DateTimeOffset(2026, 12, 6, 13, 7, 0, 123, TimeSpan.Zero),
            Body = new byte[300],
        };

        var properties = AmqpEnvelopeCodec.Encode(envelope, Source);

        Assert.Equal(["cloudEvents:specversion", "cloudEvents:time"], properties.Headers!.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(Source, properties.AppId);
        // specversion: 1 + 23 + 1 + 4 + 3 = 32; time (24 characters): 1 + 16 + 1 + 4 + 24 = 46.
        Assert.Equal(78, TableBytes(properties));
        Assert.Equal(8, EncodedSize(properties) - EncodedSize(new BasicProperties(properties) { AppId = null }));
    }

    [Fact]
    public void LegacyFiveHeaders_TheBenchWroteUntil8ab90f1_Took199Bytes()
    {
        // What Herald wrote before id, type and source moved to AMQP properties, as the bench's "+ CE headers" contender
        // wrote it at 8ab90f1 (whose bench/results/rabbitmq.md docs/rabbitmq.md quotes).
        var properties = new BasicProperties
        {
            MessageId = Guid.CreateVersion7().ToString(),
            Type = MessageType,
            Headers = new Dictionary<string, object?>(StringComparer.Ordinal)
            {
                ["cloudEvents:specversion"] = "1.0"u8.ToArray(),
                ["cloudEvents:id"] = Guid.CreateVersion7().ToString(),
                ["cloudEvents:type"] = "order-placed"u8.ToArray(),
                ["cloudEvents:source"] = "/herald"u8.ToArray(),
                ["cloudEvents:time"] = "2026-12-04T17:52:00.123Z"u8.ToArray(),
            },
        };

        // 32 + 46 as above; id (36): 1 + 14 + 1 + 4 + 36 = 56; type: 1 + 16 + 1 + 4 + 12 = 34; source: 1 + 18 + 1 + 4 + 7 = 31.
        Assert.Equal(199, TableBytes(properties));
    }

    /// <summary>The bytes of the header table after its 4-byte length, as the client encodes it.</summary>
    private static int TableBytes(BasicProperties properties) =>
        EncodedSize(properties) - EncodedSize(new BasicProperties(properties) { Headers = null }) - sizeof(uint);

    private static int EncodedSize(BasicProperties properties)
    {
        IAmqpWriteable writeable = properties;
        var buffer = new byte[writeable.GetRequiredBufferSize()];
        return writeable.WriteTo(buffer);
    }
}
