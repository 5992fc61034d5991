using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using Herald.Messages;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Tests;

/// <summary>Raw JSON interop (issue 5 item 2): plain clients read Herald messages and Herald reads theirs on raw queues.</summary>
public sealed class InteropTests : RabbitMqTestBase
{
    [Fact]
    public async Task RealAmqplibClient_SendsPlainJson_HeraldReadsItOnARawQueue()
    {
        var queue = Name("from-node");
        var transport = await CreateTransportAsync(o => o.RawQueues[queue] = "order-placed");
        var id = Guid.NewGuid();
        await NodeAmqplib.RunAsync("send", BrokerAdmin.AmqpUri.ToString(), queue, id.ToString());

        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await collector.WaitForAsync(1);
        var envelope = collector.Envelopes.Single();
        Assert.Equal(id, envelope.MessageId);
        Assert.Equal("order-placed", envelope.MessageType);
        Assert.Equal("node-corr", envelope.CorrelationId);
        Assert.Equal("acme", envelope.GetHeader("tenant"));
        Assert.Equal("3", envelope.GetHeader("retries"));
        Assert.InRange(envelope.Time, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddMinutes(1));
        Assert.Equal(7, JsonDocument.Parse(envelope.Body).RootElement.GetProperty("orderId").GetInt32());
    }

    [Fact]
    public async Task HeraldMessage_IsReadableByARealAmqplibClient()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("to-node");
        var sent = NewEnvelope("order-placed", "{\"orderId\":9}") with { CorrelationId = "c-9", Headers = new Dictionary<string, string> { ["tenant"] = "acme" } };
        await transport.SendAsync(queue, sent);

        using var doc = JsonDocument.Parse(await NodeAmqplib.RunAsync("receive", BrokerAdmin.AmqpUri.ToString(), queue));
        var properties = doc.RootElement.GetProperty("properties");
        Assert.Equal(9, doc.RootElement.GetProperty("body").GetProperty("orderId").GetInt32());
        Assert.Equal(sent.MessageId.ToString(), properties.GetProperty("messageId").GetString());
        Assert.Equal("order-placed", properties.GetProperty("type").GetString());
        Assert.Equal("c-9", properties.GetProperty("correlationId").GetString());
        Assert.Equal("application/json", properties.GetProperty("contentType").GetString());
        Assert.Equal(sent.Time.ToUnixTimeSeconds(), properties.GetProperty("timestamp").GetInt64());
        Assert.Equal("/herald", properties.GetProperty("appId").GetString());
        var headers = properties.GetProperty("headers");
        Assert.Equal("1.0", headers.GetProperty("cloudEvents:specversion").GetString());
        Assert.Equal(sent.Time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", System.Globalization.CultureInfo.InvariantCulture), headers.GetProperty("cloudEvents:time").GetString());
        Assert.Equal("acme", headers.GetProperty("cloudEvents:tenant").GetString());
    }

    [Fact]
    public async Task PlainMessage_WithAForeignId_GetsAStableIdAcrossRedeliveries()
    {
        // The shape Node apps often send: a non-Guid message id and Date.now() (milliseconds) as the timestamp.
        var queue = Name("raw");
        var transport = await CreateTransportAsync(o => o.RawQueues[queue] = "payment-received");
        await transport.DeclareQueueAsync(queue);
        var channel = await CreateRawChannelAsync();
        var sentAt = DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        await channel.BasicPublishAsync(string.Empty, queue, false, new BasicProperties
        {
            MessageId = "payment-123",
            Timestamp = new AmqpTimestamp(sentAt.ToUnixTimeMilliseconds()),
            ContentType = "application/json",
            Headers = new Dictionary<string, object?> { ["source-app"] = Encoding.UTF8.GetBytes("billing-node") },
        }, Encoding.UTF8.GetBytes("{\"amount\":5}"));

        var seen = new ConcurrentQueue<Envelope>();
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            seen.Enqueue(delivery.Envelope);
            if (delivery.Envelope.DeliveryAttempt == 1)
            {
                await delivery.NackAsync(TimeSpan.Zero, ct);
            }
        });

        await Herald.Conformance.Eventually.UntilAsync(() => seen.Count >= 2, "the raw message was redelivered");
        var (first, second) = (seen.First(), seen.Skip(1).First());
        Assert.Equal(first.MessageId, second.MessageId);
        Assert.Equal(8, first.MessageId.Version);
        Assert.Equal("payment-received", second.MessageType);
        Assert.Equal(2, second.DeliveryAttempt);
        Assert.Equal(sentAt, first.Time);
        Assert.Equal("billing-node", first.GetHeader("source-app"));
    }

    [Fact]
    public async Task RawQueue_StillReadsHeraldMessagesAsTheyWereSent()
    {
        var queue = Name("mixed");
        var transport = await CreateTransportAsync(o => o.RawQueues[queue] = "fallback-type");
        var sent = NewEnvelope("order-placed");
        await transport.SendAsync(queue, sent);
        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await collector.WaitForAsync(1);
        Assert.Equal("order-placed", collector.Envelopes[0].MessageType);
        Assert.Equal(sent.MessageId, collector.Envelopes[0].MessageId);
    }

    [Fact]
    public async Task PlainMessage_WithoutMessageId_GetsANewVersion7Id()
    {
        var queue = Name("noid");
        var transport = await CreateTransportAsync(o => o.RawQueues[queue] = "ping");
        await transport.DeclareQueueAsync(queue);
        var channel = await CreateRawChannelAsync();
        await channel.BasicPublishAsync(string.Empty, queue, Encoding.UTF8.GetBytes("{}"));
        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await collector.WaitForAsync(1);
        Assert.Equal(7, collector.Envelopes[0].MessageId.Version);
        Assert.Equal("ping", collector.Envelopes[0].MessageType);
    }
}
