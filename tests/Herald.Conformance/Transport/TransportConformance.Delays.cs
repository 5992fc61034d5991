using Herald.Transport;
using Xunit;

namespace Herald.Conformance.Transport;

public abstract partial class TransportConformance
{
    [Fact]
    public async Task Nack_WithDelay_IsNotRedeliveredBeforeTheDelay_AndIsAfter()
    {
        if (!Transport.Capabilities.SupportsDelayedDelivery)
        {
            NotApplicable("Capabilities.SupportsDelayedDelivery is false; delayed nacks are the runtime's job there.");
            return;
        }

        var delay = TestDelay;
        var queue = NewName("nack-later");
        var nacked = NewSignal<DateTimeOffset>();
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector, async (delivery, cancellationToken) =>
        {
            if (delivery.Envelope.DeliveryAttempt == 1)
            {
                var at = Clock.GetUtcNow();
                await delivery.NackAsync(delay, cancellationToken);
                nacked.TrySetResult(at);
            }
        });

        var sent = NewEnvelope(1);
        await Transport.SendAsync(queue, sent);
        var nackedAt = await nacked.Task.WaitAsync(DeliveryTimeout);

        await PassTimeUntilDueAsync(delay, collector, 1, "the nacked message came back before its delay");
        var items = await collector.WaitForCountAsync(2, DeliveryTimeout + delay, "the redelivery after the delay");

        Assert.Equal(sent.MessageId, items[1].Envelope.MessageId);
        Assert.Equal(2, items[1].Envelope.DeliveryAttempt);
        AssertNotEarly(nackedAt, items[1], delay, "A message nacked with a delay");
    }

    [Fact]
    public async Task Send_WithDelay_IsNotDeliveredBeforeTheDelay_AndIsAfter()
    {
        if (!Transport.Capabilities.SupportsDelayedDelivery)
        {
            NotApplicable("Capabilities.SupportsDelayedDelivery is false; SendOptions.Delay is the runtime's job there.");
            return;
        }

        var delay = TestDelay;
        var queue = NewName("send-later");
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector);

        var sent = NewEnvelope(1);
        var sentAt = Clock.GetUtcNow();
        await Transport.SendAsync(queue, sent, new SendOptions { Delay = delay });

        await PassTimeUntilDueAsync(delay, collector, 0, "the delayed message arrived before its delay");
        var got = (await collector.WaitForCountAsync(1, DeliveryTimeout + delay, "the delayed message"))[0];

        Assert.Equal(sent.MessageId, got.Envelope.MessageId);
        Assert.Equal(1, got.Envelope.DeliveryAttempt);
        AssertNotEarly(sentAt, got, delay, "A message sent with a delay");
    }

    [Fact]
    public async Task Send_WithDelays_DoNotHoldUpEachOther_OrImmediateMessages()
    {
        if (!Transport.Capabilities.SupportsDelayedDelivery)
        {
            NotApplicable("Capabilities.SupportsDelayedDelivery is false; SendOptions.Delay is the runtime's job there.");
            return;
        }

        // A longer delay sent first must not block a shorter one behind it (per-message TTL queues do, naively). One handler
        // at a time: on a loaded machine both delayed messages can be due by the time the consumer looks again, and are then
        // handed out in the order they became due, which concurrent handlers could record the other way round.
        var delay = TestDelay;
        var queue = NewName("delays");
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector, options: new ConsumerOptions { MaxConcurrency = 1 });

        var sentAt = Clock.GetUtcNow();
        var late = NewEnvelope(1);
        var soon = NewEnvelope(2);
        var now = NewEnvelope(3);
        await Transport.SendAsync(queue, late, new SendOptions { Delay = delay * 2 });
        await Transport.SendAsync(queue, soon, new SendOptions { Delay = delay });
        await Transport.SendAsync(queue, now);

        var first = (await collector.WaitForCountAsync(1, DeliveryTimeout, "the message sent without a delay"))[0];
        Assert.True(first.Envelope.MessageId == now.MessageId, $"The undelayed message must come first. {collector.Describe()}");

        await AdvanceTimeAsync(delay);
        var second = (await collector.WaitForCountAsync(2, DeliveryTimeout + delay, "the message with the shorter delay"))[1];
        Assert.True(second.Envelope.MessageId == soon.MessageId, $"The shorter delay must come before the longer one. {collector.Describe()}");

        await AdvanceTimeAsync(delay);
        var third = (await collector.WaitForCountAsync(3, DeliveryTimeout + (delay * 2), "the message with the longer delay"))[2];
        Assert.Equal(late.MessageId, third.Envelope.MessageId);
        AssertNotEarly(sentAt, second, delay, "The message with the shorter delay");
        AssertNotEarly(sentAt, third, delay * 2, "The message with the longer delay");
    }

    [Fact]
    public async Task Publish_WithDelay_EveryBoundQueueGetsItAfterTheDelay()
    {
        if (!Transport.Capabilities.SupportsDelayedDelivery)
        {
            NotApplicable("Capabilities.SupportsDelayedDelivery is false; SendOptions.Delay is the runtime's job there.");
            return;
        }

        var delay = TestDelay;
        var topic = NewName("publish-later");
        var first = NewName("publish-later-a");
        var second = NewName("publish-later-b");
        await Transport.BindAsync(topic, first);
        await Transport.BindAsync(topic, second);
        var collector = NewCollector();
        await using var firstConsumer = await StartConsumerAsync(Transport, first, collector, consumer: "a");
        await using var secondConsumer = await StartConsumerAsync(Transport, second, collector, consumer: "b");

        var sent = NewEnvelope(1);
        var sentAt = Clock.GetUtcNow();
        await Transport.PublishAsync(topic, sent, new SendOptions { Delay = delay });

        await PassTimeUntilDueAsync(delay, collector, 0, "a delayed publish arrived before its delay");
        var items = await collector.WaitForCountAsync(2, DeliveryTimeout + delay, "the delayed message on both subscriptions");

        Assert.Equal([first, second], items.Select(d => d.Queue).Order(StringComparer.Ordinal).ToArray());
        Assert.All(items, d =>
        {
            Assert.Equal(sent.MessageId, d.Envelope.MessageId);
            AssertNotEarly(sentAt, d, delay, "A message published with a delay");
        });
    }
}
