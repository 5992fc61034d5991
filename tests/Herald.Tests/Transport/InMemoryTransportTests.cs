using System.Globalization;
using System.Text;
using Herald.Messages;
using Herald.Conformance.Transport;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Tests.Transport;

/// <summary>What only the in-memory transport promises: bounded queues, its dead-letter list, and what disposing it stops.</summary>
public sealed class InMemoryTransportTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    // Long enough for a wrongly finished wait to show, short enough to keep the suite quick.
    private static readonly TimeSpan QuietWindow = TimeSpan.FromMilliseconds(300);

    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));

    [Fact]
    public async Task SendAsync_WhenTheQueueIsFull_WaitsUntilAMessageIsAcked()
    {
        await using var transport = NewTransport(new InMemoryTransportOptions { QueueCapacity = 4 });
        var queue = NewName();
        for (var i = 0; i < 4; i++)
        {
            await transport.SendAsync(queue, NewEnvelope(i));
        }

        var fifth = transport.SendAsync(queue, NewEnvelope(4)).AsTask();
        await AssertStaysPendingAsync(fifth, "the fifth send into a queue of capacity 4");
        Assert.Equal(4, transport.GetReadyCount(queue));

        // The first message is acked; the second stays in flight until the gate opens.
        var gate = NewSignal();
        var collector = new DeliveryCollector();
        await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, cancellationToken) =>
        {
            collector.Add(delivery);
            if (SequenceOf(delivery.Envelope) > 0)
            {
                await gate.Task.WaitAsync(Timeout, cancellationToken);
            }
        });

        await fifth.WaitAsync(Timeout);
        await collector.WaitForCountAsync(2, Timeout);
        Assert.Equal(3, transport.GetReadyCount(queue));

        // Memory stays bounded: one in flight and three ready is all the room there is.
        var sixth = transport.SendAsync(queue, NewEnvelope(5)).AsTask();
        await AssertStaysPendingAsync(sixth, "a send while four messages are held");
        gate.TrySetResult();
        await sixth.WaitAsync(Timeout);
        await collector.WaitForCountAsync(6, Timeout, "every message once the gate opened");
    }

    [Fact]
    public async Task SendAsync_WaitingForRoom_HonoursCancellation_AndTakesNoRoom()
    {
        await using var transport = NewTransport(new InMemoryTransportOptions { QueueCapacity = 1 });
        var queue = NewName();
        var held = NewEnvelope(1);
        var cancelledOne = NewEnvelope(2);
        await transport.SendAsync(queue, held);

        using var cts = new CancellationTokenSource();
        var waiting = transport.SendAsync(queue, cancelledOne, cancellationToken: cts.Token).AsTask();
        await AssertStaysPendingAsync(waiting, "a send into a full queue");
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            async () => await transport.SendAsync(queue, NewEnvelope(3), cancellationToken: new CancellationToken(canceled: true)));
        Assert.Equal(1, transport.GetReadyCount(queue));

        var collector = new DeliveryCollector();
        await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, (delivery, _) =>
        {
            collector.Add(delivery);
            return ValueTask.CompletedTask;
        });

        // The cancelled sends took no room: once the held message is acked, sends go straight in, one at a time.
        await collector.WaitForMessagesAsync([held.MessageId], Timeout, "the held message");
        var after = new[] { NewEnvelope(4), NewEnvelope(5) };
        foreach (var envelope in after)
        {
            await transport.SendAsync(queue, envelope).AsTask().WaitAsync(Timeout);
        }

        await collector.WaitForMessagesAsync([.. after.Select(e => e.MessageId)], Timeout, "the messages sent afterwards");
        Assert.Equal(0, collector.CountOf(cancelledOne.MessageId));
    }

    [Fact]
    public async Task DeadLetter_IsListedWithItsReason_FreesItsRoom_AndCanBeTaken()
    {
        await using var transport = NewTransport(new InMemoryTransportOptions { QueueCapacity = 1 });
        var queue = NewName();
        var poison = NewEnvelope(1);
        var deadLettered = NewSignal();
        await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, cancellationToken) =>
        {
            if (delivery.Envelope.MessageId == poison.MessageId)
            {
                await delivery.DeadLetterAsync("cannot be handled: test", cancellationToken);
                deadLettered.TrySetResult();
            }
        });

        await transport.SendAsync(queue, poison);
        await deadLettered.Task.WaitAsync(Timeout);

        var listed = Assert.Single(transport.GetDeadLetters(queue));
        Assert.Equal(poison.MessageId, listed.Envelope.MessageId);
        Assert.Equal(1, listed.Envelope.DeliveryAttempt);
        Assert.Equal(queue, listed.Queue);
        Assert.Equal("cannot be handled: test", listed.Reason);
        Assert.Equal(_clock.GetUtcNow(), listed.Time);

        // The queue holds one message; a dead letter no longer counts against it.
        await transport.SendAsync(queue, NewEnvelope(2)).AsTask().WaitAsync(Timeout);

        var taken = transport.TakeDeadLetter(queue);
        Assert.Equal(poison.MessageId, taken?.Envelope.MessageId);
        Assert.Empty(transport.GetDeadLetters(queue));
        Assert.Null(transport.TakeDeadLetter(queue));
        Assert.Empty(transport.GetDeadLetters("no-such-queue"));
    }

    [Fact]
    public async Task DeadLetter_WhenTheDeadLettersAreFull_Throws_AndTheMessageStaysInTheQueue()
    {
        await using var transport = NewTransport(new InMemoryTransportOptions { QueueCapacity = 2, DeadLetterCapacity = 1 });
        var queue = NewName();
        var first = NewEnvelope(1);
        var second = NewEnvelope(2);
        var refusals = new DeliveryCollector();
        var collector = new DeliveryCollector();
        await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, cancellationToken) =>
        {
            collector.Add(delivery);
            if (delivery.Envelope.DeliveryAttempt == 1 && SequenceOf(delivery.Envelope) <= 2)
            {
                try
                {
                    await delivery.DeadLetterAsync("poison", cancellationToken);
                }
                catch (InvalidOperationException)
                {
                    refusals.Add(delivery);
                }
            }
        });

        await transport.SendAsync(queue, first);
        await transport.SendAsync(queue, second);

        var refused = (await refusals.WaitForCountAsync(1, Timeout, "the refused dead letter"))[0];
        Assert.Equal(second.MessageId, refused.Envelope.MessageId);
        var again = await collector.WaitUntilAsync(
            items => items.Any(d => d.Envelope.MessageId == second.MessageId && d.Envelope.DeliveryAttempt == 2),
            Timeout,
            "the message whose dead-lettering failed, delivered again");
        Assert.Equal(first.MessageId, Assert.Single(transport.GetDeadLetters(queue)).Envelope.MessageId);

        // Its room was kept while it stayed and freed when it was acked: two more sends fit.
        await transport.SendAsync(queue, NewEnvelope(3)).AsTask().WaitAsync(Timeout);
        await transport.SendAsync(queue, NewEnvelope(4)).AsTask().WaitAsync(Timeout);
        await collector.WaitForCountAsync(5, Timeout, "the two later messages");
        Assert.Equal(1, refusals.Count);
        Assert.Equal(1, again.Count(d => d.Envelope.MessageId == second.MessageId && d.Envelope.DeliveryAttempt == 2));
    }

    [Fact]
    public async Task DelayedMessages_HoldTheirRoom_UntilHandled()
    {
        await using var transport = NewTransport(new InMemoryTransportOptions { QueueCapacity = 2 });
        var queue = NewName();
        var delay = new SendOptions { Delay = TimeSpan.FromMinutes(1) };
        await transport.SendAsync(queue, NewEnvelope(1), delay);
        await transport.SendAsync(queue, NewEnvelope(2), delay);

        var third = transport.SendAsync(queue, NewEnvelope(3)).AsTask();
        await AssertStaysPendingAsync(third, "a send while two delayed messages fill the queue");
        Assert.Equal(0, transport.GetReadyCount(queue));

        _clock.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(2, transport.GetReadyCount(queue));
        Assert.False(third.IsCompleted, "Delayed messages that became ready still hold their room.");

        var collector = new DeliveryCollector();
        await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, (delivery, _) =>
        {
            collector.Add(delivery);
            return ValueTask.CompletedTask;
        });
        await third.WaitAsync(Timeout);
        await collector.WaitForCountAsync(3, Timeout);
    }

    [Fact]
    public async Task ADelayLongerThanOneSystemTimerWaits_IsHeldUntilDue_NotRefused()
    {
        // A delay over about 49.7 days (the longest wait of one System.Threading.Timer) threw ArgumentOutOfRangeException
        // from the send, although the in-memory transport's Capabilities.MaxDelay takes any delay (a saga's 60-day timeout).
        var clock = new SystemTimerLimitClock(_clock.GetUtcNow());
        await using var transport = new InMemoryTransport(InMemoryTransportOptions.Default, clock);
        var queue = NewName();
        await transport.SendAsync(queue, NewEnvelope(1), new SendOptions { Delay = TimeSpan.FromDays(120) });

        clock.Advance(TimeSpan.FromDays(60));
        clock.Advance(TimeSpan.FromDays(60) - TimeSpan.FromTicks(1));
        Assert.Equal(0, transport.GetReadyCount(queue));
        clock.Advance(TimeSpan.FromTicks(1));
        Assert.Equal(1, transport.GetReadyCount(queue));

        // The system clock itself takes the send too.
        await using var system = new InMemoryTransport(InMemoryTransportOptions.Default, TimeProvider.System);
        await system.SendAsync(queue, NewEnvelope(2), new SendOptions { Delay = TimeSpan.FromDays(60) });
        Assert.Equal(0, system.GetReadyCount(queue));
    }

    [Fact]
    public async Task Nack_OnAFullQueue_NeedsNoRoom()
    {
        await using var transport = NewTransport(new InMemoryTransportOptions { QueueCapacity = 1 });
        var queue = NewName();
        var collector = new DeliveryCollector();
        var nackedWithDelay = NewSignal();
        await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, cancellationToken) =>
        {
            collector.Add(delivery);
            switch (delivery.Envelope.DeliveryAttempt)
            {
                case 1:
                    await delivery.NackAsync(TimeSpan.Zero, cancellationToken);
                    break;
                case 2:
                    await delivery.NackAsync(TimeSpan.FromSeconds(30), cancellationToken);
                    nackedWithDelay.TrySetResult();
                    break;
            }
        });

        await transport.SendAsync(queue, NewEnvelope(1));
        await nackedWithDelay.Task.WaitAsync(Timeout);
        _clock.Advance(TimeSpan.FromSeconds(30));
        var items = await collector.WaitForCountAsync(3, Timeout, "three deliveries of the one message");
        Assert.Equal([1, 2, 3], items.Select(d => d.Envelope.DeliveryAttempt));
        await transport.SendAsync(queue, NewEnvelope(2)).AsTask().WaitAsync(Timeout);
    }

    [Fact]
    public async Task StopAsync_WithSeveralWorkers_HandsPrefetchedMessagesBack()
    {
        await using var transport = NewTransport(InMemoryTransportOptions.Default);
        var queue = NewName();
        for (var i = 0; i < 10; i++)
        {
            await transport.SendAsync(queue, NewEnvelope(i));
        }

        var gate = NewSignal();
        var collector = new DeliveryCollector();
        var consumer = await transport.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 2, Prefetch = 8 }, async (delivery, cancellationToken) =>
        {
            collector.Add(delivery);
            await gate.Task.WaitAsync(Timeout, cancellationToken);
        });
        await collector.WaitForCountAsync(2, Timeout, "both workers busy");

        var stopping = consumer.StopAsync();
        gate.TrySetResult();
        await stopping.WaitAsync(Timeout);
        await consumer.DisposeAsync();

        Assert.Equal(2, collector.Count);
        Assert.Equal(8, transport.GetReadyCount(queue));
    }

    /// <summary>
    /// What a stopping consumer hands back (the message its handler was cancelled in, and with several workers those
    /// prefetched into its lanes and the one its pump held) goes back to the head of the queue in send order, as a broker's
    /// requeue puts it back at its place. Regression: each went to the tail, so after a stop and a start the queue's order
    /// (and the order of the messages of one partition key) was no longer the send order.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task StopAsync_HandsMessagesBackToTheHeadOfTheQueue_InSendOrder(int workers)
    {
        await using var transport = NewTransport(InMemoryTransportOptions.Default);
        var queue = NewName();
        const int Count = 12;
        for (var i = 0; i < Count; i++)
        {
            await transport.SendAsync(queue, NewEnvelope(i) with { PartitionKey = "k" });
        }

        var started = NewSignal();
        var consumer = await transport.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = workers, Prefetch = 16 }, async (_, cancellationToken) =>
        {
            started.TrySetResult();
            await Task.Delay(System.Threading.Timeout.Infinite, cancellationToken);
        });
        await started.Task.WaitAsync(Timeout);

        // With two workers the key's lane holds 8 and the pump waits with the tenth for room, leaving two in the queue.
        var left = workers == 1 ? Count - 1 : Count - 10;
        await Herald.Conformance.Eventually.UntilAsync(() => transport.GetReadyCount(queue) == left, "the consumer took what it can hold", Timeout);
        await StopAndAssertHandedBackInSendOrderAsync(transport, queue, consumer, Count);
    }

    /// <summary>
    /// With several workers, messages without a partition key are spread over the workers' lanes; a stop hands them back in
    /// the order the consumer read them (send order), not lane by lane. Regression (review 44b): the stop returned each
    /// worker's message and its lane, then the next worker's, so a single consumer started after it got 0, 2, 4, ..., 1, 3, ...
    /// </summary>
    [Fact]
    public async Task StopAsync_WithSeveralWorkers_HandsUnkeyedMessagesBackInSendOrder()
    {
        await using var transport = NewTransport(InMemoryTransportOptions.Default);
        var queue = NewName();
        const int Count = 12;
        for (var i = 0; i < Count; i++)
        {
            await transport.SendAsync(queue, NewEnvelope(i));
        }

        var started = 0;
        var bothStarted = NewSignal();
        var consumer = await transport.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 2, Prefetch = 16 }, async (_, cancellationToken) =>
        {
            if (Interlocked.Increment(ref started) == 2)
            {
                bothStarted.TrySetResult();
            }

            await Task.Delay(System.Threading.Timeout.Infinite, cancellationToken);
        });
        await bothStarted.Task.WaitAsync(Timeout);

        // Two lanes of 8 and the two workers hold all twelve.
        await Herald.Conformance.Eventually.UntilAsync(() => transport.GetReadyCount(queue) == 0, "the consumer took every message", Timeout);
        await StopAndAssertHandedBackInSendOrderAsync(transport, queue, consumer, Count);
    }

    /// <summary>
    /// Two consumers of one queue each hold messages (handling and, with several workers, prefetched); both stop, the one
    /// that read first stopping first. A consumer started after them reads every message in send order. Regression (review
    /// 45): each stop pushed its batch to the front, so the batch handed back last was read first (7..11 before 0..6).
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task StopAsync_OfTwoConsumers_HandsBothBatchesBackInSendOrder(int workers)
    {
        await using var transport = NewTransport(InMemoryTransportOptions.Default);
        var queue = NewName();
        const int Count = 12;
        for (var i = 0; i < Count; i++)
        {
            await transport.SendAsync(queue, NewEnvelope(i));
        }

        // With two workers and a prefetch of 4, a consumer holds two handled, two lanes of 2 and the pump's one: 7.
        var options = new ConsumerOptions { MaxConcurrency = workers, Prefetch = 4 };
        var first = await StartHoldingAsync(transport, queue, options, workers, left: workers == 1 ? Count - 1 : Count - 7);
        var second = await StartHoldingAsync(transport, queue, options, workers, left: workers == 1 ? Count - 2 : 0);

        await first.StopAsync(new CancellationToken(canceled: true)).WaitAsync(Timeout);
        await first.DisposeAsync();
        await StopAndAssertHandedBackInSendOrderAsync(transport, queue, second, Count);
    }

    // A consumer whose handlers wait for their cancellation, once each of its workers handles a message and the queue has left.
    private static async Task<ITransportConsumer> StartHoldingAsync(InMemoryTransport transport, string queue, ConsumerOptions options, int workers, int left)
    {
        var started = 0;
        var allStarted = NewSignal();
        var consumer = await transport.ConsumeAsync(queue, options, async (_, cancellationToken) =>
        {
            if (Interlocked.Increment(ref started) == workers)
            {
                allStarted.TrySetResult();
            }

            await Task.Delay(System.Threading.Timeout.Infinite, cancellationToken);
        });
        await allStarted.Task.WaitAsync(Timeout);
        await Herald.Conformance.Eventually.UntilAsync(() => transport.GetReadyCount(queue) == left, "the consumer took what it can hold", Timeout);
        return consumer;
    }

    [Fact]
    public async Task DisposeAsync_StopsConsumersAndTimers()
    {
        var transport = NewTransport(InMemoryTransportOptions.Default);
        var queue = NewName();
        var started = NewSignal();
        var cancelled = NewSignal();
        var never = NewSignal();
        var collector = new DeliveryCollector();
        await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, cancellationToken) =>
        {
            collector.Add(delivery);
            started.TrySetResult();
            try
            {
                await never.Task.WaitAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
                cancelled.TrySetResult();
                throw;
            }
        });
        await transport.SendAsync(queue, NewEnvelope(1));
        await transport.SendAsync(queue, NewEnvelope(2), new SendOptions { Delay = TimeSpan.FromMinutes(1) });
        await started.Task.WaitAsync(Timeout);

        await transport.DisposeAsync().AsTask().WaitAsync(Timeout);
        Assert.True(cancelled.Task.IsCompleted, "Disposing the transport must cancel the handlers still running.");

        // The in-flight message went back to the queue; the delayed one's timer is gone, so advancing time adds nothing.
        _clock.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(1, transport.GetReadyCount(queue));

        await transport.SendAsync(queue, NewEnvelope(3));
        await collector.AssertNoMoreThanAsync(1, QuietWindow, "a consumer of a disposed transport took a message");
        Assert.Equal(2, transport.GetReadyCount(queue));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Stopping_WhileAHandlerIgnoresItsCancellation_ReturnsAfterTheGrace_AndTheMessageIsDeliveredAgain(bool dispose)
    {
        // Regression (audit, round 8): a stop, and the transport's dispose, awaited a handler that ignores its token for as
        // long as it ran, so the host's stop waited 20 s for a 20 s handler whatever its shutdown timeouts said.
        var transport = new InMemoryTransport(InMemoryTransportOptions.Default, TimeProvider.System);
        var queue = NewName();
        var release = NewSignal();
        try
        {
            await transport.SendAsync(queue, NewEnvelope(1));
            var started = NewSignal();
            var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (_, _) =>
            {
                started.TrySetResult();
                await release.Task;
            });
            await started.Task.WaitAsync(Timeout);

            using var deadline = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
            var stopwatch = System.Diagnostics.Stopwatch.StartNew();
            await (dispose ? consumer.DisposeAsync().AsTask() : consumer.StopAsync(deadline.Token)).WaitAsync(Timeout);
            Assert.InRange(stopwatch.Elapsed, TimeSpan.Zero, TimeSpan.FromMilliseconds(200) + Herald.Internal.ConsumerStop.AbandonGrace + TimeSpan.FromSeconds(2));

            // Abandoned, not settled: the message is handed back, and the handler's end after the stop settles nothing.
            var collector = new DeliveryCollector();
            await using var next = await transport.ConsumeAsync(queue, ConsumerOptions.Default, (delivery, _) =>
            {
                collector.Add(delivery);
                return ValueTask.CompletedTask;
            });
            var delivered = await collector.WaitForCountAsync(1, Timeout, "the abandoned message delivered again");
            Assert.Equal(1, SequenceOf(delivered[0].Envelope));
            release.TrySetResult();
            await collector.AssertNoMoreThanAsync(1, QuietWindow, "the abandoned handler's late end sent its message again");
        }
        finally
        {
            release.TrySetResult();
            await transport.DisposeAsync().AsTask().WaitAsync(Timeout);
        }
    }

    [Fact]
    public async Task Consumer_DisposedTwiceAndThenByTheTransport_IsHarmless()
    {
        // Regression: disposing a consumer and then its transport threw ObjectDisposedException.
        var transport = NewTransport(InMemoryTransportOptions.Default);
        var consumer = await transport.ConsumeAsync(NewName(), ConsumerOptions.Default, (_, _) => ValueTask.CompletedTask);

        await consumer.StopAsync();
        await consumer.DisposeAsync();
        await consumer.DisposeAsync();
        await consumer.StopAsync(new CancellationToken(canceled: true));
        await transport.DisposeAsync();
        await transport.DisposeAsync();
    }

    [Fact]
    public async Task ConsumeAsync_WithImpossibleOptions_Throws()
    {
        await using var transport = NewTransport(InMemoryTransportOptions.Default);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(
            async () => await transport.ConsumeAsync(NewName(), new ConsumerOptions { MaxConcurrency = 0 }, (_, _) => ValueTask.CompletedTask));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(
            async () => await transport.ConsumeAsync(NewName(), new ConsumerOptions { Prefetch = 0 }, (_, _) => ValueTask.CompletedTask));
    }

    [Fact]
    public async Task SendAsync_ToAnEmptyQueueName_Throws()
    {
        await using var transport = NewTransport(InMemoryTransportOptions.Default);
        await Assert.ThrowsAsync<ArgumentException>(async () => await transport.SendAsync(" ", NewEnvelope(1)));
        await Assert.ThrowsAsync<ArgumentException>(async () => await transport.PublishAsync("", NewEnvelope(1)));
    }

    [Fact]
    public async Task AHandlerOfItsOwn_GetsADeliveryPerMessage_ThatKeepsItsEnvelope()
    {
        await using var transport = NewTransport(InMemoryTransportOptions.Default);
        var queue = NewName();
        for (var i = 0; i < 3; i++)
        {
            await transport.SendAsync(queue, NewEnvelope(i));
        }

        var kept = new List<Delivery>();
        var all = NewSignal();
        await using var consumer = await transport.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 1 }, (delivery, _) =>
        {
            lock (kept)
            {
                kept.Add(delivery);
                if (kept.Count == 3)
                {
                    all.TrySetResult();
                }
            }

            return ValueTask.CompletedTask;
        });

        await all.Task.WaitAsync(Timeout);
        Assert.Equal(3, kept.Distinct().Count());
        Assert.Equal([0, 1, 2], kept.Select(d => SequenceOf(d.Envelope)));
        Assert.All(kept, d => Assert.True(d.IsSettled));
    }

    [Fact]
    public async Task AHandlerThatForgetsItsDeliveries_GetsOneDeliveryObjectPerWorker_UnsettledForEachMessage()
    {
        // Issue 9: the endpoint pipeline keeps no delivery past its call, so a worker reuses one delivery object.
        await using var transport = NewTransport(InMemoryTransportOptions.Default);
        var queue = NewName();
        for (var i = 0; i < 3; i++)
        {
            await transport.SendAsync(queue, NewEnvelope(i));
        }

        var handler = new ForgettingHandler(3);
        await using var consumer = await transport.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 1 }, handler.HandleAsync);

        await handler.All.Task.WaitAsync(Timeout);
        Assert.Single(handler.Seen.Select(s => s.Delivery).Distinct());
        Assert.Equal([0, 1, 2], handler.Seen.Select(s => s.Sequence));
        Assert.All(handler.Seen, s => Assert.False(s.SettledOnArrival));
        Assert.Equal(0, transport.GetReadyCount(queue));
    }

    private InMemoryTransport NewTransport(InMemoryTransportOptions options) => new(options, _clock);

    private static string NewName() => "q-" + Guid.NewGuid().ToString("N");

    // Stops the consumer at once, then checks that every one of count messages is ready again and a new consumer gets them
    // in send order.
    private static async Task StopAndAssertHandedBackInSendOrderAsync(InMemoryTransport transport, string queue, ITransportConsumer consumer, int count)
    {
        await consumer.StopAsync(new CancellationToken(canceled: true)).WaitAsync(Timeout);
        await consumer.DisposeAsync();
        Assert.Equal(count, transport.GetReadyCount(queue));

        var collector = new DeliveryCollector();
        await using var next = await transport.ConsumeAsync(queue, ConsumerOptions.Default, (delivery, _) =>
        {
            collector.Add(delivery);
            return ValueTask.CompletedTask;
        });
        var delivered = await collector.WaitForCountAsync(count, Timeout, "every message delivered again");
        Assert.Equal(Enumerable.Range(0, count), delivered.Select(d => SequenceOf(d.Envelope)));
    }

    private static Envelope NewEnvelope(int sequence) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "in-memory-test",
        Time = DateTimeOffset.UtcNow,
        Headers = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [TransportConformance.SequenceHeader] = sequence.ToString(CultureInfo.InvariantCulture),
        },
        Body = Encoding.UTF8.GetBytes("{}"),
    };

    private static int SequenceOf(Envelope envelope) =>
        int.Parse(envelope.GetHeader(TransportConformance.SequenceHeader)!, CultureInfo.InvariantCulture);

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private static async Task AssertStaysPendingAsync(Task task, string what)
    {
        try
        {
            await task.WaitAsync(QuietWindow);
        }
        catch (TimeoutException)
        {
            return;
        }

        Assert.Fail($"Expected {what} to wait, but it completed ({task.Status}).");
    }

    private sealed class ForgettingHandler(int expected) : IForgetsDeliveries
    {
        public List<(Delivery Delivery, int Sequence, bool SettledOnArrival)> Seen { get; } = [];

        public TaskCompletionSource All { get; } = NewSignal();

        public ValueTask HandleAsync(Delivery delivery, CancellationToken cancellationToken)
        {
            lock (Seen)
            {
                Seen.Add((delivery, SequenceOf(delivery.Envelope), delivery.IsSettled));
                if (Seen.Count == expected)
                {
                    All.TrySetResult();
                }
            }

            return ValueTask.CompletedTask;
        }
    }

    /// <summary>A fake clock whose one-shot timers refuse a wait longer than a System.Threading.Timer takes, as the system clock's do.</summary>
    private sealed class SystemTimerLimitClock(DateTimeOffset start) : FakeTimeProvider(start)
    {
        private static readonly TimeSpan Longest = TimeSpan.FromMilliseconds(uint.MaxValue - 1);

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            ArgumentOutOfRangeException.ThrowIfGreaterThan(dueTime, Longest);
            return base.CreateTimer(callback, state, dueTime, period);
        }
    }
}
