using System.Collections.Concurrent;
using System.Globalization;
using Herald.Transport;
using Xunit;

namespace Herald.Conformance.Transport;

public abstract partial class TransportConformance
{
    [Fact]
    public async Task CompetingConsumers_OnOneQueue_GetEveryMessageExactlyOnce_AndAllDoWork()
    {
        const int consumerCount = 3;
        const int messageCount = 300;
        var queue = NewName("competing");
        await Transport.DeclareQueueAsync(queue);
        var collector = NewCollector();

        // Each consumer holds its first message until every consumer has one, so all of them provably take part.
        var started = new int[consumerCount];
        var startedCount = 0;
        var allStarted = NewSignal();
        var gateTimedOut = 0;
        var second = await ConnectAsync();
        var consumers = new List<ITransportConsumer>();
        try
        {
            for (var i = 0; i < consumerCount; i++)
            {
                var index = i;
                var transport = i == consumerCount - 1 ? second : Transport;
                consumers.Add(await StartConsumerAsync(transport, queue, collector, async (_, cancellationToken) =>
                {
                    if (Interlocked.Exchange(ref started[index], 1) == 0)
                    {
                        if (Interlocked.Increment(ref startedCount) == consumerCount)
                        {
                            allStarted.TrySetResult();
                        }

                        try
                        {
                            await allStarted.Task.WaitAsync(DeliveryTimeout, cancellationToken);
                        }
                        catch (TimeoutException)
                        {
                            Interlocked.Exchange(ref gateTimedOut, 1);
                        }
                    }
                }, consumer: "c" + index.ToString(CultureInfo.InvariantCulture)));
            }

            var sent = Enumerable.Range(0, messageCount).Select(i => NewEnvelope(i)).ToList();
            foreach (var envelope in sent)
            {
                await Transport.SendAsync(queue, envelope);
            }

            await collector.WaitForMessagesAsync([.. sent.Select(e => e.MessageId)], DeliveryTimeout * 3, "every message across the consumers");
            await collector.AssertNoMoreThanAsync(messageCount, QuietWindow, "a message was delivered twice to competing consumers");

            var items = collector.Items;
            var perConsumer = items.GroupBy(d => d.Consumer).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
            Output.WriteLine("Deliveries per consumer: " + string.Join(", ", perConsumer.Select(p => $"{p.Key}={p.Value}")));
            var duplicates = items.GroupBy(d => d.Envelope.MessageId).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
            Assert.True(duplicates.Count == 0, $"{duplicates.Count} messages were delivered more than once. {collector.Describe()}");
            Assert.True(
                Volatile.Read(ref gateTimedOut) == 0 && perConsumer.Count == consumerCount,
                $"Every competing consumer must get work while the others are busy; deliveries per consumer: "
                + string.Join(", ", perConsumer.Select(p => $"{p.Key}={p.Value}")));
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
    public async Task MaxConcurrency_IsHonoured_AndUsed()
    {
        const int maxConcurrency = 3;
        const int messageCount = 12;
        var queue = NewName("concurrency");
        var inFlight = 0;
        var highest = 0;
        var allBusy = NewSignal();
        var tooMany = NewSignal();
        var release = NewSignal();
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector, async (_, cancellationToken) =>
        {
            var now = Interlocked.Increment(ref inFlight);
            try
            {
                Interlocks.Max(ref highest, now);
                if (now == maxConcurrency)
                {
                    allBusy.TrySetResult();
                }
                else if (now > maxConcurrency)
                {
                    tooMany.TrySetResult();
                }

                // The first handlers wait at the gate; once it opens, handlers yield so that they overlap.
                await release.Task.WaitAsync(DeliveryTimeout, cancellationToken);
                await Task.Yield();
            }
            finally
            {
                Interlocked.Decrement(ref inFlight);
            }
        }, new ConsumerOptions { MaxConcurrency = maxConcurrency });

        for (var i = 0; i < messageCount; i++)
        {
            await Transport.SendAsync(queue, NewEnvelope(i));
        }

        try
        {
            await allBusy.Task.WaitAsync(DeliveryTimeout);
        }
        catch (TimeoutException)
        {
            Assert.Fail($"MaxConcurrency is {maxConcurrency} and the work is slow, yet at most {Volatile.Read(ref highest)} handlers ran at once.");
        }

        // While every slot is busy, give the consumer a chance to start one handler too many.
        await AssertStillRunningAsync(tooMany.Task, $"More than {maxConcurrency} handlers ran at once");
        release.TrySetResult();
        await collector.WaitForCountAsync(messageCount, DeliveryTimeout, "every message");

        Assert.Equal(maxConcurrency, Volatile.Read(ref highest));
    }

    [Fact]
    public async Task PartitionKey_OrderIsKept_WithMaxConcurrencyFour()
    {
        if (!Transport.Capabilities.PreservesOrderPerPartitionKey)
        {
            NotApplicable("Capabilities.PreservesOrderPerPartitionKey is false, so no order is promised.");
            return;
        }

        const int keyCount = 4;
        const int perKey = 50;
        var queue = NewName("ordered");
        var keys = Enumerable.Range(0, keyCount).Select(k => $"{queue}-key{k}").ToArray();
        var inFlightPerKey = new int[keyCount];
        var overlaps = new ConcurrentQueue<string>();
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector, async (delivery, _) =>
        {
            var key = Array.IndexOf(keys, delivery.Envelope.PartitionKey);
            if (Interlocked.Increment(ref inFlightPerKey[key]) > 1)
            {
                overlaps.Enqueue($"{keys[key]} seq {SequenceOf(delivery.Envelope)}");
            }

            await Task.Yield();
            Interlocked.Decrement(ref inFlightPerKey[key]);
        }, new ConsumerOptions { MaxConcurrency = 4 });

        for (var i = 0; i < perKey; i++)
        {
            foreach (var key in keys)
            {
                await Transport.SendAsync(queue, NewEnvelope(i, key));
            }
        }

        var items = await collector.WaitForCountAsync(keyCount * perKey, DeliveryTimeout * 2, "every keyed message");

        Assert.True(overlaps.IsEmpty, "Messages of one partition key were handled at the same time: " + string.Join(", ", overlaps));
        foreach (var key in keys)
        {
            var order = items.Where(d => d.Envelope.PartitionKey == key).Select(d => SequenceOf(d.Envelope)).ToList();
            Assert.True(
                order.SequenceEqual(Enumerable.Range(0, perKey)),
                $"Messages of key '{key}' must arrive once each in send order; got: {string.Join(",", order)}");
        }
    }

    [Fact]
    public async Task Consumer_StoppedMidFlow_AnotherTakesOver_NothingLostNothingAckedTwice()
    {
        const int messageCount = 40;
        const int stopAfter = 10;
        var queue = NewName("takeover");
        var sent = Enumerable.Range(0, messageCount).Select(i => NewEnvelope(i)).ToList();
        foreach (var envelope in sent)
        {
            await Transport.SendAsync(queue, envelope);
        }

        var acked = NewCollector();
        var handledByA = 0;
        var atStopPoint = NewSignal();
        var release = NewSignal();
        var consumerA = await StartConsumerAsync(Transport, queue, NewCollector(), async (delivery, cancellationToken) =>
        {
            if (Interlocked.Increment(ref handledByA) == stopAfter)
            {
                // Consumer A is slow here: the test stops it while this handler still runs.
                atStopPoint.TrySetResult();
                await release.Task.WaitAsync(DeliveryTimeout, cancellationToken);
            }

            await delivery.AckAsync(cancellationToken);
            acked.Add(delivery, "A");
        });
        try
        {
            await atStopPoint.Task.WaitAsync(DeliveryTimeout);
            var stopping = consumerA.StopAsync();
            release.TrySetResult();
            await stopping.WaitAsync(DeliveryTimeout);
        }
        finally
        {
            await consumerA.DisposeAsync();
        }

        var countByA = acked.Count;
        var second = await ConnectAsync();
        Output.WriteLine($"Consumer A handled {countByA} of {messageCount}; consumer B runs on "
            + (ReferenceEquals(second, Transport) ? "the same transport instance (queues live in it)." : "a second transport instance."));
        var seenByB = NewCollector();
        await using var consumerB = await StartConsumerAsync(second, queue, seenByB, async (delivery, cancellationToken) =>
        {
            if (delivery.Envelope.MessageType != MarkerType)
            {
                await delivery.AckAsync(cancellationToken);
                acked.Add(delivery, "B");
            }
        });

        await acked.WaitForMessagesAsync([.. sent.Select(e => e.MessageId)], DeliveryTimeout * 2, "every message acked by A or B");
        await SendMarkersAndWaitAsync(second, queue, seenByB);

        Assert.True(countByA >= stopAfter, $"Consumer A must have finished the handler running when it was stopped. {acked.Describe()}");
        var twice = acked.Items.GroupBy(d => d.Envelope.MessageId).Where(g => g.Count() > 1).ToList();
        Assert.True(twice.Count == 0, $"{twice.Count} messages were handled and acked twice. {acked.Describe()}");
        Assert.Equal(messageCount, acked.Count);
    }

    [Fact]
    public async Task StopAsync_WaitsForTheRunningHandler_AcksIt_AndHandsBackTheRest()
    {
        var queue = NewName("graceful");
        var running = NewEnvelope(1);
        var waiting = new[] { NewEnvelope(2), NewEnvelope(3) };
        var started = NewSignal();
        var release = NewSignal();
        var finished = 0;
        var tokenCancelled = 0;
        var first = NewCollector();
        var consumer = await StartConsumerAsync(Transport, queue, first, async (delivery, cancellationToken) =>
        {
            if (delivery.Envelope.MessageId == running.MessageId)
            {
                started.TrySetResult();
                await release.Task.WaitAsync(DeliveryTimeout * 2, cancellationToken);
                Interlocked.Exchange(ref tokenCancelled, cancellationToken.IsCancellationRequested ? 1 : 0);
                Interlocked.Exchange(ref finished, 1);
            }
        });
        try
        {
            await Transport.SendAsync(queue, running);
            await started.Task.WaitAsync(DeliveryTimeout);
            foreach (var envelope in waiting)
            {
                await Transport.SendAsync(queue, envelope);
            }

            var stopping = consumer.StopAsync();
            await AssertStillRunningAsync(stopping, "StopAsync returned while a handler was still running");
            release.TrySetResult();
            await stopping.WaitAsync(DeliveryTimeout);
            Assert.Equal(1, Volatile.Read(ref finished));
            Assert.Equal(0, Volatile.Read(ref tokenCancelled));
            Assert.True(first.Count == 1, $"A stopping consumer must not start new deliveries. {first.Describe()}");
        }
        finally
        {
            release.TrySetResult();
            await consumer.DisposeAsync();
        }

        // The handler returned normally, so its message was acked; the others go to the next consumer.
        var next = NewCollector();
        await using var nextConsumer = await StartConsumerAsync(Transport, queue, next);
        await next.WaitForMessagesAsync([.. waiting.Select(e => e.MessageId)], DeliveryTimeout, "the messages the stopped consumer never handled");
        await SendMarkersAndWaitAsync(Transport, queue, next);
        AssertDeliveredTimes(next, running.MessageId, 0, "the message whose handler finished during StopAsync");
    }

    [Fact]
    public async Task StopAsync_WithACancelledToken_CancelsInFlightHandlers_AndTheirMessagesAreDeliveredAgain()
    {
        var queue = NewName("abort");
        var started = NewSignal();
        var cancelled = NewSignal();
        var never = NewSignal();
        var first = NewCollector();
        var consumer = await StartConsumerAsync(Transport, queue, first, async (_, cancellationToken) =>
        {
            started.TrySetResult();
            try
            {
                await never.Task.WaitAsync(DeliveryTimeout * 2, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                cancelled.TrySetResult();
                throw;
            }
        });
        var sent = NewEnvelope(1);
        try
        {
            await Transport.SendAsync(queue, sent);
            await started.Task.WaitAsync(DeliveryTimeout);
            await consumer.StopAsync(new CancellationToken(canceled: true)).WaitAsync(DeliveryTimeout);
            Assert.True(cancelled.Task.IsCompleted, "StopAsync with a cancelled token must cancel the token of in-flight handlers.");
        }
        finally
        {
            await consumer.DisposeAsync();
        }

        var next = NewCollector();
        await using var nextConsumer = await StartConsumerAsync(Transport, queue, next);
        var again = (await next.WaitForMessagesAsync([sent.MessageId], DeliveryTimeout, "the message whose handler was cancelled"))[0];
        Assert.True(again.Envelope.DeliveryAttempt >= 1, again.ToString());
    }

    [Fact]
    public async Task ConnectionKilled_MidFlow_LosesNothing()
    {
        if (!CanKillConnection)
        {
            NotApplicable("the test class does not override CanKillConnection/KillConnectionAsync (a connection that cannot be lost).");
            return;
        }

        const int messageCount = 50;
        const int killAfter = 10;
        var queue = NewName("killed");
        var sent = Enumerable.Range(0, messageCount).Select(i => NewEnvelope(i)).ToList();
        foreach (var envelope in sent.Take(messageCount / 2))
        {
            await Transport.SendAsync(queue, envelope);
        }

        var handled = 0;
        var midFlow = NewSignal();
        var collector = NewCollector();
        await using var consumer = await StartConsumerAsync(Transport, queue, collector, (_, _) =>
        {
            if (Interlocked.Increment(ref handled) == killAfter)
            {
                midFlow.TrySetResult();
            }

            return ValueTask.CompletedTask;
        });

        await midFlow.Task.WaitAsync(DeliveryTimeout);
        await KillConnectionAsync(Transport);
        foreach (var envelope in sent.Skip(messageCount / 2))
        {
            await Transport.SendAsync(queue, envelope);
        }

        // At least once: a message in flight when the connection died may come again, but none may be missing.
        await collector.WaitForMessagesAsync([.. sent.Select(e => e.MessageId)], DeliveryTimeout * 3, "every message after the connection was killed");
        Output.WriteLine($"{collector.Count} deliveries for {messageCount} messages.");
    }
}
