using Herald.Messages;
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

    // The pipeline nacks a failed attempt with a delay and its first-failure header: the redelivery, which some engines make
    // as a copy (a delay queue, a retry topic, a delay stream), must still carry the sender's trace context, so the retry's
    // process span stays in the producer's trace.
    [Fact]
    public async Task Nack_WithDelayAndHeaders_RedeliversTheSendersTraceContext()
    {
        if (!Transport.Capabilities.SupportsDelayedDelivery)
        {
            NotApplicable("Capabilities.SupportsDelayedDelivery is false; delayed nacks are the runtime's job there.");
            return;
        }

        var delay = TestDelay;
        var queue = NewName("nack-traced");
        var collector = NewCollector();
        var nacked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var consumer = await StartConsumerAsync(Transport, queue, collector, async (delivery, cancellationToken) =>
        {
            if (delivery.Envelope.DeliveryAttempt == 1)
            {
                await delivery.NackAsync(delay, new Dictionary<string, string>(StringComparer.Ordinal) { ["herald-first-failure"] = "2031-05-17T11:45:12.3450000Z" }, cancellationToken);
                nacked.TrySetResult();
            }
        });

        var sent = Traced(NewEnvelope(1));
        await Transport.SendAsync(queue, sent);

        // The clock moves on only once the nack has scheduled the redelivery: moved before, a fake clock left it due later.
        await nacked.Task.WaitAsync(DeliveryTimeout);
        await AdvanceTimeAsync(delay);
        var items = await collector.WaitForCountAsync(2, DeliveryTimeout + delay, "the redelivery after the delay");

        AssertTraceContext(sent, items[1].Envelope, "A message nacked with a delay and headers");
    }

    [Fact]
    public async Task Send_WithDelay_DeliversTheSendersTraceContext()
    {
        if (!Transport.Capabilities.SupportsDelayedDelivery)
        {
            NotApplicable("Capabilities.SupportsDelayedDelivery is false; SendOptions.Delay is the runtime's job there.");
            return;
        }

        var delay = TestDelay;
        var queue = NewName("send-later-traced");
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector);

        var sent = Traced(NewEnvelope(1));
        await Transport.SendAsync(queue, sent, new SendOptions { Delay = delay });
        await AdvanceTimeAsync(delay);
        var got = (await collector.WaitForCountAsync(1, DeliveryTimeout + delay, "the delayed message"))[0];

        AssertTraceContext(sent, got.Envelope, "A message sent with a delay");
    }

    private static Envelope Traced(Envelope envelope) =>
        envelope.WithHeader(HeaderNames.TraceParent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .WithHeader(HeaderNames.TraceState, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");

    private static void AssertTraceContext(Envelope sent, Envelope received, string what)
    {
        foreach (var name in new[] { HeaderNames.TraceParent, HeaderNames.TraceState })
        {
            Assert.True(
                received.Headers.TryGetValue(name, out var value) && value == sent.Headers[name],
                $"{what} must arrive with its '{name}' ('{sent.Headers[name]}'); received headers: "
                + string.Join(", ", received.Headers.Select(h => $"{h.Key}={h.Value}")));
        }
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
