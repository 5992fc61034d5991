using System.Text;
using Herald.Messages;
using Herald.Nats.Transport;
using NATS.Client.Core;

namespace Herald.Nats.Tests;

/// <summary>The mapping of the envelope onto NATS headers, without a server.</summary>
public sealed class NatsEnvelopeCodecTests
{
    [Theory]
    [InlineData("plain ascii stays", "plain ascii stays")]
    [InlineData("Kraków ✓ 東京", "Krak%C3%B3w %E2%9C%93 %E6%9D%B1%E4%BA%AC")]
    [InlineData("100%", "100%25")]
    [InlineData("line\r\nbreak", "line%0D%0Abreak")]
    [InlineData("emoji 🐢", "emoji %F0%9F%90%A2")]
    public void HeaderValues_OutsidePrintableAscii_ArePercentEncoded_AndDecodedBack(string value, string onTheWire)
    {
        Assert.Equal(onTheWire, NatsEnvelopeCodec.Escape(value));
        Assert.Equal(value, NatsEnvelopeCodec.Unescape(onTheWire));
    }

    [Fact]
    public void AttributesInAnotherCase_FromAForeignClient_AreRead()
    {
        var id = Guid.NewGuid();
        var headers = new NatsHeaders
        {
            ["CE-SpecVersion"] = "1.0",
            ["CE-ID"] = id.ToString(),
            ["Ce-Type"] = "order-placed",
            ["ce-time"] = "2031-05-17T11:45:12.345Z",
            ["CE-PartitionKey"] = "customer-7",
            ["ce-Tenant"] = "acme",
        };
        var envelope = NatsEnvelopeCodec.Decode(headers, Encoding.UTF8.GetBytes("{}"), 1, DateTimeOffset.UtcNow, null, "/herald", TimeProvider.System, out var failure);
        Assert.Null(failure);
        Assert.Equal(id, envelope.MessageId);
        Assert.Equal("order-placed", envelope.MessageType);
        Assert.Equal("customer-7", envelope.PartitionKey);
        Assert.Equal("acme", envelope.GetHeader("Tenant"));
    }

    [Fact]
    public void AMessageWithoutHeaders_OnAQueueThatIsNotRaw_IsMalformed_AndKeepsItsBody()
    {
        var body = Encoding.UTF8.GetBytes("not json at all");
        var envelope = NatsEnvelopeCodec.Decode(null, body, 3, DateTimeOffset.UtcNow, null, "/herald", TimeProvider.System, out var failure);
        Assert.NotNull(failure);
        Assert.Contains("no id", failure.Message, StringComparison.Ordinal);
        Assert.Equal(body, envelope.Body.ToArray());
        Assert.Equal(3, envelope.DeliveryAttempt);
    }

    [Fact]
    public void Encode_WritesTheRequiredAttributes_TheContentType_AndADueTimeOnlyWhenDelayed()
    {
        var envelope = new Envelope { MessageId = Guid.NewGuid(), MessageType = "t", Time = DateTimeOffset.UnixEpoch, SchemaVersion = 2 };
        var headers = NatsEnvelopeCodec.Encode(envelope, "/herald");
        Assert.Equal("1.0", headers["ce-specversion"]);
        Assert.Equal(envelope.MessageId.ToString(), headers["ce-id"]);
        Assert.Equal("1970-01-01T00:00:00.000Z", headers["ce-time"]);
        Assert.Equal("urn:herald:schema:t:2", headers["ce-dataschema"]);
        Assert.Equal(ContentTypes.Json, headers["Content-Type"]);
        Assert.False(headers.ContainsKey(NatsEnvelopeCodec.NotBeforeHeader));
        var due = DateTimeOffset.UnixEpoch.AddSeconds(5);
        Assert.Equal(due, NatsEnvelopeCodec.NotBefore(NatsEnvelopeCodec.Encode(envelope, "/herald", due)));
    }

    [Fact]
    public void Decode_ReadsTheDueTime_InTheSamePass_AsNotBeforeDoes()
    {
        var envelope = new Envelope { MessageId = Guid.NewGuid(), MessageType = "t", Time = DateTimeOffset.UnixEpoch };
        var due = DateTimeOffset.UnixEpoch.AddSeconds(5);
        var headers = NatsEnvelopeCodec.Encode(envelope, "/herald", due);
        var decoded = NatsEnvelopeCodec.Decode(headers, Encoding.UTF8.GetBytes("{}"), 1, DateTimeOffset.UtcNow, null, "/herald", TimeProvider.System, out var failure, out var notBefore);
        Assert.Null(failure);
        Assert.Equal(envelope.MessageId, decoded.MessageId);
        Assert.Equal(due, notBefore);
        Assert.False(decoded.Headers.ContainsKey(NatsEnvelopeCodec.NotBeforeHeader));

        // Sent without a delay: none, as NotBefore reads it.
        NatsEnvelopeCodec.Decode(NatsEnvelopeCodec.Encode(envelope, "/herald"), Encoding.UTF8.GetBytes("{}"), 1, DateTimeOffset.UtcNow, null, "/herald", TimeProvider.System, out _, out var none);
        Assert.Null(none);
        Assert.Null(NatsEnvelopeCodec.NotBefore(NatsEnvelopeCodec.Encode(envelope, "/herald")));
    }

    [Fact]
    public void Decode_OfAMalformedDelayedMessage_StillReadsItsDueTime()
    {
        var due = DateTimeOffset.UnixEpoch.AddSeconds(5);
        var headers = new NatsHeaders
        {
            ["ce-specversion"] = "1.0",
            ["ce-id"] = "not a guid",
            [NatsEnvelopeCodec.NotBeforeHeader] = "1970-01-01T00:00:05.000Z",
        };
        NatsEnvelopeCodec.Decode(headers, Encoding.UTF8.GetBytes("{}"), 1, DateTimeOffset.UtcNow, null, "/herald", TimeProvider.System, out var failure, out var notBefore);
        Assert.NotNull(failure);
        Assert.Equal(due, notBefore);
    }
}
