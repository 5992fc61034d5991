using System.Collections.Concurrent;
using Herald.Transport;
using Xunit;

namespace Herald.Conformance.Transport;

public abstract partial class TransportConformance
{
    [Fact]
    public async Task Ack_MessageIsNeverRedelivered()
    {
        var queue = NewName("ack");
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector, (delivery, cancellationToken) =>
            delivery.Envelope.MessageType == MarkerType ? ValueTask.CompletedTask : delivery.AckAsync(cancellationToken));

        var sent = NewEnvelope(1);
        await Transport.SendAsync(queue, sent);
        await collector.WaitForMessagesAsync([sent.MessageId], DeliveryTimeout, "the message");
        await SendMarkersAndWaitAsync(Transport, queue, collector);

        AssertDeliveredTimes(collector, sent.MessageId, 1, "an acked message");
    }

    [Fact]
    public async Task Handler_ReturnsWithoutSettling_MessageIsAcked()
    {
        var queue = NewName("unsettled");
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector);

        var sent = NewEnvelope(1);
        await Transport.SendAsync(queue, sent);
        await collector.WaitForMessagesAsync([sent.MessageId], DeliveryTimeout, "the message");
        await SendMarkersAndWaitAsync(Transport, queue, collector);

        AssertDeliveredTimes(collector, sent.MessageId, 1, "a message whose handler returned without settling it");
    }

    [Fact]
    public async Task Handler_Throws_MessageIsRedeliveredWithDeliveryAttemptTwo()
    {
        var queue = NewName("throws");
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector, (delivery, _) =>
            delivery.Envelope.MessageType != MarkerType && delivery.Envelope.DeliveryAttempt == 1
                ? throw new InvalidOperationException("Conformance test: the handler fails on the first attempt.")
                : ValueTask.CompletedTask);

        var sent = NewEnvelope(1);
        await Transport.SendAsync(queue, sent);
        var items = await collector.WaitForCountAsync(2, DeliveryTimeout, "the first delivery and its redelivery");
        await SendMarkersAndWaitAsync(Transport, queue, collector);

        Assert.All(items.Take(2), d => Assert.Equal(sent.MessageId, d.Envelope.MessageId));
        Assert.Equal([1, 2], items.Take(2).Select(d => d.Envelope.DeliveryAttempt));
        Assert.Equal(sent.Body.ToArray(), items[1].Envelope.Body.ToArray());
        AssertDeliveredTimes(collector, sent.MessageId, 2, "a message whose handler threw once");
    }

    [Fact]
    public async Task Nack_WithZeroDelay_IsRedeliveredAtOnce_CountingEveryAttempt()
    {
        var queue = NewName("nack-now");
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector, (delivery, cancellationToken) =>
            delivery.Envelope.MessageType != MarkerType && delivery.Envelope.DeliveryAttempt < 3
                ? delivery.NackAsync(TimeSpan.Zero, cancellationToken)
                : ValueTask.CompletedTask);

        var sent = NewEnvelope(1);
        await Transport.SendAsync(queue, sent);

        // No clock is advanced: a zero-delay nack must not wait for time to pass.
        var items = await collector.WaitForCountAsync(3, DeliveryTimeout, "two immediate redeliveries");
        await SendMarkersAndWaitAsync(Transport, queue, collector);

        Assert.Equal([1, 2, 3], items.Take(3).Select(d => d.Envelope.DeliveryAttempt));
        AssertDeliveredTimes(collector, sent.MessageId, 3, "a message nacked twice");
    }

    [Fact]
    public async Task DeadLetter_MessageIsNeverRedelivered()
    {
        var queue = NewName("dead-letter");
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector, (delivery, cancellationToken) =>
            delivery.Envelope.MessageType == MarkerType
                ? ValueTask.CompletedTask
                : delivery.DeadLetterAsync("conformance test: poison message", cancellationToken));

        var sent = NewEnvelope(1);
        await Transport.SendAsync(queue, sent);
        await collector.WaitForMessagesAsync([sent.MessageId], DeliveryTimeout, "the message");
        await SendMarkersAndWaitAsync(Transport, queue, collector);

        AssertDeliveredTimes(collector, sent.MessageId, 1, "a dead-lettered message");
        if (Transport.Capabilities.SupportsNativeDeadLetter)
        {
            Output.WriteLine("The transport keeps dead letters natively; this suite checks only that they are not redelivered.");
        }
    }

    // Round 4 (native dead-letter drain): a native dead letter without Herald's dead-letter id (dead-lettered before the
    // pipeline, or by the broker) got a new id each time a drain read it, so one the store took while the drain failed to
    // remove it (a lost answer, a crash, a connection loss) was stored again by the next drain: two dead letters.
    [Fact]
    public async Task DeadLetter_WithoutHeraldsRecord_IsReadAgainByTheNextDrainAsTheSameDeadLetter()
    {
        if (Transport is not INativeDeadLetterSource source || !NativeDeadLettersCanBeReadAgainAfterStoring)
        {
            Output.WriteLine("The transport has no native dead letters a drain could read twice.");
            return;
        }

        var queue = NewName("dead-letter-identity");
        var collector = NewCollector();
        var sent = NewEnvelope(1);
        await using (var consumer = await StartConsumerAsync(Transport, queue, collector, (delivery, cancellationToken) =>
            delivery.Envelope.MessageType == MarkerType
                ? ValueTask.CompletedTask
                : delivery.DeadLetterAsync("conformance test: dead-lettered without a record", cancellationToken)))
        {
            await Transport.SendAsync(queue, sent);
            await collector.WaitForMessagesAsync([sent.MessageId], DeliveryTimeout, "the message");
            await SendMarkersAndWaitAsync(Transport, queue, collector);
        }

        // The first drain's store took it, but the drain heard a failure (it cannot tell): the dead letter stays.
        var first = await DrainOneAsync(source, queue, lose: true);
        var again = await DrainOneAsync(source, queue, lose: false);

        Assert.Equal(sent.MessageId, first.Envelope.MessageId);
        Assert.Equal(sent.MessageId, again.Envelope.MessageId);
        Assert.NotNull(Identity(first));
        Assert.Equal(Identity(first), Identity(again));

        // What the store keeps it under: Herald's dead-letter id when it carries one, else the id derived from this.
        static string? Identity(NativeDeadLetter deadLetter) => deadLetter.Envelope.GetHeader(Herald.Messages.HeaderNames.DeadLetterId) ?? deadLetter.NativeId;
    }

    /// <summary>Drains the queue until one dead letter came; with <paramref name="lose"/> the move fails, so it stays.</summary>
    private async Task<NativeDeadLetter> DrainOneAsync(INativeDeadLetterSource source, string queue, bool lose)
    {
        var read = new ConcurrentQueue<NativeDeadLetter>();
        await Eventually.UntilAsync(
            async () =>
            {
                var failure = await Record.ExceptionAsync(async () => await source.DrainDeadLettersAsync(queue, (deadLetter, _) =>
                {
                    read.Enqueue(deadLetter);
                    return lose ? throw new TimeoutException("the dead-letter store's answer was lost") : ValueTask.CompletedTask;
                }));
                Assert.True(failure is null or TimeoutException, $"the drain failed: {failure}");
                return !read.IsEmpty;
            },
            "a dead letter drained",
            DeliveryTimeout * 3);
        return Assert.Single(read);
    }

    [Fact]
    public async Task Settle_Twice_IsHarmless_AndTheFirstSettlementWins()
    {
        var queue = NewName("settle-twice");
        var errors = new ConcurrentQueue<string>();
        var ackedFirst = NewEnvelope(1);
        var deadLetteredFirst = NewEnvelope(2);
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector, async (delivery, cancellationToken) =>
        {
            if (delivery.Envelope.MessageType == MarkerType)
            {
                return;
            }

            try
            {
                if (delivery.Envelope.MessageId == ackedFirst.MessageId)
                {
                    await delivery.AckAsync(cancellationToken);
                    await delivery.NackAsync(TimeSpan.Zero, cancellationToken);
                    await delivery.DeadLetterAsync("too late", cancellationToken);
                    await delivery.AckAsync(cancellationToken);
                }
                else
                {
                    await delivery.DeadLetterAsync("conformance test: first settlement", cancellationToken);
                    await delivery.AckAsync(cancellationToken);
                    await delivery.NackAsync(TimeSpan.Zero, cancellationToken);
                }

                if (!delivery.IsSettled)
                {
                    errors.Enqueue($"{delivery.Envelope.MessageId:N}: IsSettled is false after settling.");
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"{delivery.Envelope.MessageId:N}: settling again threw {ex}");
                throw;
            }
        });

        await Transport.SendAsync(queue, ackedFirst);
        await Transport.SendAsync(queue, deadLetteredFirst);
        await collector.WaitForMessagesAsync([ackedFirst.MessageId, deadLetteredFirst.MessageId], DeliveryTimeout, "both messages");
        await SendMarkersAndWaitAsync(Transport, queue, collector);

        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors));
        AssertDeliveredTimes(collector, ackedFirst.MessageId, 1, "a message acked, then nacked");
        AssertDeliveredTimes(collector, deadLetteredFirst.MessageId, 1, "a message dead-lettered, then nacked");
    }
}
