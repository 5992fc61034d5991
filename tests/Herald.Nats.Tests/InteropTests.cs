using System.Text.Json;
using Herald.Conformance;
using Herald.Messages;
using Xunit.Abstractions;

namespace Herald.Nats.Tests;

/// <summary>Interop with the `nats` npm client (issue 13 item 4): JetStream publish and pull-consume both ways, and dedup by id.</summary>
public sealed class InteropTests(ITestOutputHelper output) : NatsTestBase
{
    [Fact]
    public async Task ANodeJetStreamPublish_IsHandledByHeraldOnce_AndItsDuplicateById_IsSuppressed()
    {
        if (!await NodeNats.ReadyAsync(output))
        {
            return;
        }

        var queue = "from-node-" + Guid.NewGuid().ToString("N")[..8];
        var transport = await CreateTransportAsync(o => o.RawQueues[queue] = "order-placed");
        await transport.DeclareQueueAsync(queue);
        var id = Guid.NewGuid();
        using var acks = JsonDocument.Parse(await NodeNats.RunAsync("publish", NatsServer.Url, Names.QueueSubject(queue), id.ToString()));
        Assert.False(acks.RootElement[0].GetProperty("duplicate").GetBoolean());
        Assert.True(acks.RootElement[1].GetProperty("duplicate").GetBoolean(), "the stream must drop the second publish with the same Nats-Msg-Id");

        var (consumer, seen) = await ConsumeAsync(transport, queue);
        await using (consumer)
        {
            await Eventually.UntilAsync(() => !seen.IsEmpty, "the message from node");
            await transport.SendAsync(queue, NewEnvelope("marker"));
            await Eventually.UntilAsync(() => seen.Any(e => e.MessageType == "nats-test"), "Herald's marker sent after it");
        }

        var envelope = Assert.Single(seen, e => e.MessageType == "order-placed");
        Assert.Equal(id, envelope.MessageId);
        Assert.Equal("acme", envelope.GetHeader("tenant"));
        Assert.Equal(ContentTypes.Json, envelope.ContentType);
        Assert.Equal(1, envelope.DeliveryAttempt);
        Assert.Equal(7, JsonDocument.Parse(envelope.Body).RootElement.GetProperty("orderId").GetInt32());
    }

    [Fact]
    public async Task AHeraldSend_IsPulledByANodeConsumer_WithTheEnvelopeInCloudEventsHeaders()
    {
        if (!await NodeNats.ReadyAsync(output))
        {
            return;
        }

        var queue = "to-node-" + Guid.NewGuid().ToString("N")[..8];
        var transport = await CreateTransportAsync();
        var sent = NewEnvelope("to node") with
        {
            MessageType = "order-placed",
            CorrelationId = "c-9",
            Headers = new Dictionary<string, string>(StringComparer.Ordinal) { ["tenant"] = "acme", ["city"] = "Kraków" },
        };
        await transport.SendAsync(queue, sent);

        using var doc = JsonDocument.Parse(await NodeNats.RunAsync("pull", NatsServer.Url, Names.QueueStream(queue), "node-reader"));
        var headers = doc.RootElement.GetProperty("headers");
        Assert.Equal(Names.QueueSubject(queue), doc.RootElement.GetProperty("subject").GetString());
        Assert.Equal("to node", doc.RootElement.GetProperty("body").GetProperty("text").GetString());
        Assert.Equal(sent.MessageId.ToString(), headers.GetProperty("ce-id").GetString());
        Assert.Equal(sent.MessageId.ToString(), headers.GetProperty("Nats-Msg-Id").GetString());
        Assert.Equal("order-placed", headers.GetProperty("ce-type").GetString());
        Assert.Equal("1.0", headers.GetProperty("ce-specversion").GetString());
        Assert.Equal("c-9", headers.GetProperty("ce-correlationid").GetString());
        Assert.Equal("application/json", headers.GetProperty("Content-Type").GetString());
        Assert.Equal("acme", headers.GetProperty("ce-tenant").GetString());
        Assert.Equal("Krak%C3%B3w", headers.GetProperty("ce-city").GetString());
        Assert.Equal(sent.Time.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", System.Globalization.CultureInfo.InvariantCulture), headers.GetProperty("ce-time").GetString());
    }
}
