using Herald.Messages;
using Herald.Transport;
using Xunit;

namespace Herald.Conformance.Transport;

public abstract partial class TransportConformance
{
    [Fact]
    public async Task Send_ThenConsume_RoundTripsEveryEnvelopeField()
    {
        var queue = NewName("roundtrip");
        var body = new byte[512];
        for (var i = 0; i < body.Length; i++)
        {
            body[i] = (byte)(i * 7);
        }

        var sent = new Envelope
        {
            MessageId = Guid.CreateVersion7(),
            MessageType = "conformance-round-trip",
            SchemaVersion = 3,
            Time = new DateTimeOffset(2031, 5, 17, 13, 45, 12, 345, TimeSpan.FromHours(2)),
            CorrelationId = "correlation-" + Guid.NewGuid().ToString("N"),
            CausationId = "causation-" + Guid.NewGuid().ToString("N"),
            UserId = "user-42@example.com",
            PartitionKey = "customer-17",
            ContentType = "application/x-herald-conformance",
            Headers = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                [HeaderNames.TraceParent] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ["X-Mixed-Case"] = "a value with spaces",
                ["unicode"] = "żółw ✓ 東京",
            },
            Body = body,
        };

        var got = await SendAndReceiveOneAsync(queue, sent);

        var received = got.Envelope;
        Assert.Equal(queue, got.Queue);
        AssertSameAttributes(sent, received);
        foreach (var header in sent.Headers)
        {
            // A transport may add headers of its own; every header sent must come back unchanged.
            Assert.True(
                received.Headers.TryGetValue(header.Key, out var value) && value == header.Value,
                $"Header '{header.Key}' must round-trip as '{header.Value}'; received headers: "
                + string.Join(", ", received.Headers.Select(h => $"{h.Key}={h.Value}")));
        }

        Assert.Equal(body, received.Body.ToArray());
    }

    // docs/cloudevents.md: other headers travel as extensions of their own name; one named like an attribute the envelope
    // carries itself must not take that attribute's place (on Kafka a header "type" became the message type).
    [Fact]
    public async Task Send_WithHeadersNamedLikeTheEnvelopesOwnAttributes_KeepsTheEnvelopesValues()
    {
        var queue = NewName("impostors");
        var sent = new Envelope
        {
            MessageId = Guid.CreateVersion7(),
            MessageType = "conformance-impostors",
            SchemaVersion = 2,
            Time = new DateTimeOffset(2031, 5, 17, 11, 45, 12, 345, TimeSpan.Zero),
            CorrelationId = "correlation-1",
            CausationId = "causation-1",
            UserId = "user-1",
            PartitionKey = "key-1",
            ContentType = "application/x-herald-conformance",
            Headers = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["id"] = "not-a-guid",
                ["type"] = "impostor",
                ["specversion"] = "0.3",
                ["time"] = "yesterday",
                ["dataschema"] = "urn:herald:schema:impostor:9",
                ["datacontenttype"] = "text/plain",
                ["partitionkey"] = "key-2",
                ["correlationid"] = "correlation-2",
                ["causationid"] = "causation-2",
                ["userid"] = "user-2",
                ["deliveryattempt"] = "7",
            },
            Body = "{}"u8.ToArray(),
        };

        AssertSameAttributes(sent, (await SendAndReceiveOneAsync(queue, sent)).Envelope);
    }

    // Every attribute the envelope carries itself, as a first delivery.
    private static void AssertSameAttributes(Envelope sent, Envelope received)
    {
        Assert.Equal(sent.MessageId, received.MessageId);
        Assert.Equal(sent.MessageType, received.MessageType);
        Assert.Equal(sent.SchemaVersion, received.SchemaVersion);
        Assert.True(
            sent.Time == received.Time,
            $"Time must round-trip to the millisecond: sent {sent.Time:O}, received {received.Time:O}.");
        Assert.Equal(sent.CorrelationId, received.CorrelationId);
        Assert.Equal(sent.CausationId, received.CausationId);
        Assert.Equal(sent.UserId, received.UserId);
        Assert.Equal(sent.PartitionKey, received.PartitionKey);
        Assert.Equal(sent.ContentType, received.ContentType);
        Assert.Equal(1, received.DeliveryAttempt);
    }

    private async Task<CollectedDelivery> SendAndReceiveOneAsync(string queue, Envelope sent)
    {
        await Transport.SendAsync(queue, sent);
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector);
        return (await collector.WaitForCountAsync(1, DeliveryTimeout))[0];
    }

    [Fact]
    public async Task Send_EnvelopeWithOnlyRequiredFields_RoundTripsNullsAndAnEmptyBody()
    {
        var queue = NewName("minimal");
        var sent = new Envelope
        {
            MessageId = Guid.CreateVersion7(),
            MessageType = "conformance-minimal",
            Time = new DateTimeOffset(2030, 1, 2, 3, 4, 5, 6, TimeSpan.Zero),
        };

        var received = (await SendAndReceiveOneAsync(queue, sent)).Envelope;

        Assert.Equal(sent.MessageId, received.MessageId);
        Assert.Equal(sent.MessageType, received.MessageType);
        Assert.Equal(1, received.SchemaVersion);
        Assert.Equal(sent.Time, received.Time);
        Assert.Null(received.CorrelationId);
        Assert.Null(received.CausationId);
        Assert.Null(received.UserId);
        Assert.Null(received.PartitionKey);
        Assert.Equal(ContentTypes.Json, received.ContentType);
        Assert.Equal(0, received.Body.Length);
        Assert.Equal(1, received.DeliveryAttempt);
    }

    [Fact]
    public async Task Send_ToAQueueBeforeAnyConsumerExists_IsKeptAndDeliveredLater()
    {
        // No DeclareQueueAsync: sending creates the queue, so nothing sent is lost.
        var queue = NewName("early");
        var sent = Enumerable.Range(0, 3).Select(i => NewEnvelope(i)).ToList();
        foreach (var envelope in sent)
        {
            await Transport.SendAsync(queue, envelope);
        }

        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector);
        await collector.WaitForMessagesAsync([.. sent.Select(e => e.MessageId)], DeliveryTimeout, "messages sent before the consumer started");
        await SendMarkersAndWaitAsync(Transport, queue, collector);
        foreach (var envelope in sent)
        {
            AssertDeliveredTimes(collector, envelope.MessageId, 1, "a message sent before any consumer");
        }
    }

    [Fact]
    public async Task Publish_ToATopicWithThreeBoundQueues_EveryQueueGetsEveryMessageExactlyOnce()
    {
        var topic = NewName("fanout");
        var queues = Enumerable.Range(0, 3).Select(i => NewName("fanout-sub" + i)).ToList();
        var collectors = queues.Select(_ => NewCollector()).ToList();
        var consumers = new List<ITransportConsumer>();
        try
        {
            for (var i = 0; i < queues.Count; i++)
            {
                await Transport.BindAsync(topic, queues[i]);
                consumers.Add(await StartConsumerAsync(Transport, queues[i], collectors[i], consumer: "sub" + i));
            }

            var sent = Enumerable.Range(0, 10).Select(i => NewEnvelope(i)).ToList();
            foreach (var envelope in sent)
            {
                await Transport.PublishAsync(topic, envelope);
            }

            for (var i = 0; i < queues.Count; i++)
            {
                await collectors[i].WaitForMessagesAsync([.. sent.Select(e => e.MessageId)], DeliveryTimeout, $"the published messages on subscription {i}");
            }

            // Published markers reach every subscription after anything the topic copied there earlier.
            for (var m = 1; m <= 2; m++)
            {
                var marker = NewEnvelope(-m, messageType: MarkerType);
                await Transport.PublishAsync(topic, marker);
                for (var i = 0; i < queues.Count; i++)
                {
                    await collectors[i].WaitForMessagesAsync([marker.MessageId], DeliveryTimeout, $"marker {m} on subscription {i}");
                }
            }

            for (var i = 0; i < queues.Count; i++)
            {
                Assert.All(collectors[i].Items, d => Assert.Equal(queues[i], d.Queue));
                foreach (var envelope in sent)
                {
                    AssertDeliveredTimes(collectors[i], envelope.MessageId, 1, $"subscription {i}");
                }
            }
        }
        finally
        {
            foreach (var consumer in consumers)
            {
                await consumer.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Publish_ToATopicWithoutBindings_DoesNotThrow_AndALaterBindingGetsOnlyLaterMessages()
    {
        var topic = NewName("unbound");
        var queue = NewName("unbound-sub");
        var beforeBinding = NewEnvelope(1);
        await Transport.PublishAsync(topic, beforeBinding);

        await Transport.BindAsync(topic, queue);
        var afterBinding = NewEnvelope(2);
        await Transport.PublishAsync(topic, afterBinding);

        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector);
        var first = (await collector.WaitForCountAsync(1, DeliveryTimeout))[0];
        Assert.True(
            first.Envelope.MessageId == afterBinding.MessageId,
            $"A binding copies messages published from then on only; the first delivery should be the later message. {collector.Describe()}");
    }

    [Fact]
    public async Task Queue_BoundToTwoTopics_ReceivesFromBoth()
    {
        var first = NewName("topic-a");
        var second = NewName("topic-b");
        var queue = NewName("two-topics");
        await Transport.BindAsync(first, queue);
        await Transport.BindAsync(second, queue);
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector);

        var fromFirst = NewEnvelope(1);
        var fromSecond = NewEnvelope(2);
        await Transport.PublishAsync(first, fromFirst);
        await Transport.PublishAsync(second, fromSecond);

        await collector.WaitForMessagesAsync([fromFirst.MessageId, fromSecond.MessageId], DeliveryTimeout, "one message from each topic");
        await SendMarkersAndWaitAsync(Transport, queue, collector);
        AssertDeliveredTimes(collector, fromFirst.MessageId, 1, "the message of the first topic");
        AssertDeliveredTimes(collector, fromSecond.MessageId, 1, "the message of the second topic");
    }

    [Fact]
    public async Task Send_MessageOverMaxMessageBytes_IsRefusedBeforeSending()
    {
        var limit = Transport.Capabilities.MaxMessageBytes;
        if (limit == int.MaxValue)
        {
            NotApplicable("Capabilities.MaxMessageBytes is int.MaxValue (no size limit), so no message is too large.");
            return;
        }

        var queue = NewName("too-large");
        var topic = NewName("too-large-topic");
        await Transport.BindAsync(topic, queue);
        var tooLarge = NewEnvelope(1) with { Body = new byte[limit + 1] };

        var sendError = await Assert.ThrowsAsync<MessageTooLargeException>(async () => await Transport.SendAsync(queue, tooLarge));
        Assert.Equal(limit + 1, sendError.Bytes);
        Assert.Equal(limit, sendError.Limit);
        Assert.Contains(tooLarge.MessageType, sendError.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<MessageTooLargeException>(async () => await Transport.PublishAsync(topic, tooLarge));

        // A body of exactly the limit is accepted, and it is the first thing the queue delivers.
        var atLimit = NewEnvelope(2) with { Body = new byte[limit] };
        await Transport.SendAsync(queue, atLimit);
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector);
        var first = (await collector.WaitForCountAsync(1, DeliveryTimeout))[0];
        Assert.True(first.Envelope.MessageId == atLimit.MessageId, $"The refused message must not have been sent. {collector.Describe()}");
        Assert.Equal(limit, first.Envelope.Body.Length);
    }

    [Fact]
    public async Task Send_WithDelayOverMaxDelay_IsRefusedBeforeSending()
    {
        // Only the outbox checked MaxDelay: a direct send or publish with a longer delay was stored by some transports
        // (NATS kept it in its delay stream) and never delivered when asked.
        var limit = Transport.Capabilities.MaxDelay;
        if (limit == TimeSpan.MaxValue)
        {
            NotApplicable("Capabilities.MaxDelay is TimeSpan.MaxValue (no delay limit), so no delay is too long.");
            return;
        }

        var queue = NewName("delay-too-long");
        var topic = NewName("delay-too-long-topic");
        await Transport.BindAsync(topic, queue);
        var tooLong = new SendOptions { Delay = limit + TimeSpan.FromDays(1) };

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await Transport.SendAsync(queue, NewEnvelope(1), tooLong));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await Transport.PublishAsync(topic, NewEnvelope(2), tooLong));

        // Nothing was stored: an immediate message sent next is the first thing the queue delivers.
        var next = NewEnvelope(3);
        await Transport.SendAsync(queue, next);
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector);
        var first = (await collector.WaitForCountAsync(1, DeliveryTimeout))[0];
        Assert.True(first.Envelope.MessageId == next.MessageId, $"The refused message must not have been sent. {collector.Describe()}");
    }
}
