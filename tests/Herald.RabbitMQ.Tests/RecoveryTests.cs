using System.Collections.Concurrent;
using Herald.Messages;
using Herald.RabbitMQ.Transport;
using Herald.Transport;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace Herald.RabbitMQ.Tests;

public sealed class RecoveryTests : RabbitMqTestBase
{
    [Fact]
    public async Task ConnectionKilledMidFlow_LosesNothing()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("resilient");
        await transport.DeclareQueueAsync(queue);
        var handled = new ConcurrentDictionary<Guid, int>();
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            await Task.Yield();
            handled.AddOrUpdate(delivery.Envelope.MessageId, 1, (_, n) => n + 1);
        }, new ConsumerOptions { MaxConcurrency = 4, Prefetch = 32 });

        const int total = 400;
        var sent = new ConcurrentBag<Guid>();
        var failures = 0;
        var killed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        async Task SendWithRetryAsync(Envelope envelope)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (true)
            {
                try
                {
                    await transport.SendAsync(queue, envelope);
                    sent.Add(envelope.MessageId);
                    return;
                }
                catch (HeraldException) when (DateTime.UtcNow < deadline)
                {
                    // Not confirmed: it may or may not be stored, so send it again (the consumer sees duplicates at most).
                    Interlocked.Increment(ref failures);
                    await Task.Delay(20);
                }
            }
        }

        var producers = Enumerable.Range(0, 4).Select(p => Task.Run(async () =>
        {
            for (var i = 0; i < total / 4; i++)
            {
                if (p == 0 && i == total / 8)
                {
                    await BrokerAdmin.KillConnectionsAsync(Prefix + ":", atLeast: 2);
                    killed.SetResult();
                }

                await SendWithRetryAsync(NewEnvelope());
            }
        })).ToList();

        await Task.WhenAll(producers);
        await killed.Task;
        Assert.Equal(total, sent.Count);
        await Herald.Conformance.Eventually.UntilAsync(() => sent.All(handled.ContainsKey), $"every sent message was handled ({handled.Count}/{total})", TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task ConnectionKilled_WhileHandling_TheUnackedMessageComesBack()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("inflight");
        var sent = NewEnvelope();
        await transport.SendAsync(queue, sent);
        var first = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var attempts = new ConcurrentQueue<int>();
        // Two workers: the first is held in the handler while the redelivered copy arrives.
        var consumer = await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            attempts.Enqueue(delivery.Envelope.DeliveryAttempt);
            if (attempts.Count == 1)
            {
                first.SetResult();
                await release.Task.WaitAsync(ct);
            }
        }, new ConsumerOptions { MaxConcurrency = 2 });

        await first.Task.WaitAsync(TimeSpan.FromSeconds(15));
        await BrokerAdmin.KillConnectionsAsync(Prefix + ":consume");
        await Herald.Conformance.Eventually.UntilAsync(() => attempts.Count >= 2, "the message was redelivered after recovery");
        release.SetResult();
        Assert.Equal([1, 2], attempts.ToArray());

        // The stale delivery is not settled and the redelivered copy was acked: a marker sent now is the next delivery.
        await consumer.StopAsync();
        var marker = NewEnvelope("marker");
        await transport.SendAsync(queue, marker);
        var next = new Collector();
        await ConsumeAsync(transport, queue, next.Handler);
        await next.WaitForAsync(1);
        Assert.Equal(marker.MessageId, next.Envelopes[0].MessageId);
    }

    // Review round 4: after a publish failed on an exchange deleted behind Herald's back, Herald declared the exchange
    // again but not its bindings, so every later publish was confirmed and dropped (not mandatory) until a restart.
    [Fact]
    public async Task Publish_AfterTheExchangeWasDeletedBehindItsBack_ReachesTheBoundQueueAgain()
    {
        var topic = Name("placed");
        var queue = Name("billing");
        var (transport, collector) = await ConsumeBoundQueueAsync(topic, queue);

        await BrokerAdmin.DeleteAllAsync(topic);
        var sent = new List<Guid>();
        for (var i = 0; i < 5; i++)
        {
            sent.Add(await PublishWithRetryAsync(transport, topic));
        }

        await Herald.Conformance.Eventually.UntilAsync(
            () => sent.All(id => collector.Envelopes.Any(e => e.MessageId == id)), "every publish that succeeded reached the bound queue");
    }

    [Fact]
    public async Task Publish_AfterTheExchangeAndQueueWereDeletedBehindItsBack_DeclaresBothAndTheBindingAgain()
    {
        var transport = await CreateTransportAsync();
        var topic = Name("placed");
        var queue = Name("shipping");
        await transport.BindAsync(topic, queue);
        await transport.PublishAsync(topic, NewEnvelope());

        await BrokerAdmin.DeleteAllAsync(Prefix);
        var sent = new List<Guid>();
        for (var i = 0; i < 3; i++)
        {
            sent.Add(await PublishWithRetryAsync(transport, topic));
        }

        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await collector.WaitForAsync(3);
        Assert.Equal(sent, collector.Envelopes.Select(e => e.MessageId));
    }

    // Without confirms the broker's 404 closes the channel after the publish returned, and a return is only logged: Herald
    // never forgot the exchange or queue, so every later publish to it was lost too, until a restart.
    [Fact]
    public async Task PublisherConfirmsOff_PublishAfterTheExchangeWasDeleted_ReachesTheBoundQueueAgain()
    {
        var topic = Name("placed");
        var queue = Name("billing");
        var (transport, collector) = await ConsumeBoundQueueAsync(topic, queue, o => o.PublisherConfirms = false);

        // Unconfirmed, the publishes right after the delete are lost; a later one must get through.
        await BrokerAdmin.DeleteAllAsync(topic);
        await Herald.Conformance.Eventually.UntilAsync(
            async () =>
            {
                await PublishWithRetryAsync(transport, topic);
                return collector.Count > 1;
            },
            "a publish reaches the bound queue again");
    }

    [Fact]
    public async Task PublisherConfirmsOff_SendAfterTheQueueWasDeleted_DeclaresItAgain()
    {
        var transport = await CreateTransportAsync(o => o.PublisherConfirms = false);
        var queue = Name("orders");
        await transport.SendAsync(queue, NewEnvelope());

        await BrokerAdmin.DeleteAllAsync(queue);
        await Herald.Conformance.Eventually.UntilAsync(
            async () =>
            {
                await transport.SendAsync(queue, NewEnvelope());
                return (await BrokerAdmin.QueueNamesAsync(queue)).Contains(queue);
            },
            "a send declares the queue again");

        var marker = NewEnvelope("marker");
        await transport.SendAsync(queue, marker);
        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await Herald.Conformance.Eventually.UntilAsync(() => collector.Envelopes.Any(e => e.MessageId == marker.MessageId), "the marker is handled");
    }

    // Review round 4: the broker cancels the consumer of a deleted queue; the consumer stayed idle for good, with
    // nothing but a log line to show it, and the queue's bindings were gone.
    [Fact]
    public async Task Consume_QueueDeletedBehindItsBack_DeclaresItWithItsBindingsAndConsumesAgain()
    {
        var topic = Name("placed");
        var queue = Name("audit");
        var (transport, collector) = await ConsumeBoundQueueAsync(topic, queue);

        await BrokerAdmin.DeleteAllAsync(queue);
        await Herald.Conformance.Eventually.UntilAsync(async () => await BrokerAdmin.ConsumerCountAsync(queue) == 1, "the queue is back with one consumer");

        var sent = NewEnvelope();
        await transport.PublishAsync(topic, sent);
        await collector.WaitForAsync(2);
        Assert.Equal(sent.MessageId, collector.Envelopes[1].MessageId);
    }

    [Fact]
    public async Task Consume_WithoutTopologyDeclaration_QueueDeletedAndMadeAgain_ConsumesAgain()
    {
        var queue = Name("operated");
        var channel = await CreateRawChannelAsync();
        await channel.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false);
        var transport = await CreateTransportAsync(o => o.DeclareTopology = false);
        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);

        await BrokerAdmin.DeleteAllAsync(queue);
        await channel.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false);
        await Herald.Conformance.Eventually.UntilAsync(async () => await BrokerAdmin.ConsumerCountAsync(queue) == 1, "the consumer is back on the queue made again");

        await transport.SendAsync(queue, NewEnvelope());
        await collector.WaitForAsync(1);
    }

    [Fact]
    public async Task Consume_StartedOnAQueueDeletedBehindItsBack_FailsOnceThenStartsOnTheNextTry()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("restarted");
        await transport.DeclareQueueAsync(queue);
        await BrokerAdmin.DeleteAllAsync(queue);

        var error = await Assert.ThrowsAsync<HeraldException>(async () => await transport.ConsumeAsync(queue, ConsumerOptions.Default, new Collector().Handler));
        Assert.Contains("404", error.Message, StringComparison.Ordinal);

        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await transport.SendAsync(queue, NewEnvelope());
        await collector.WaitForAsync(1);
    }

    // Round 4 follow-up: the queue deleted again between the resuming consumer's re-declare and its basic.consume; the
    // 404 closed the consumer's channel and every later try failed on it (warning 5014 each interval) for good.
    [Fact]
    public async Task Consume_QueueDeletedAgainBeforeTheResumedConsume_ConsumesAgainOnANewChannel()
    {
        var topic = Name("placed");
        var queue = Name("twice");
        var transport = await CreateTransportAsync();
        await transport.BindAsync(topic, queue);
        var collector = new Collector();
        var consumer = await ConsumeAsync(transport, queue, collector.Handler);
        var deletedAgain = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        ((RabbitMqTransport)transport).QueueRestoredForTests = async name =>
        {
            if (!deletedAgain.Task.IsCompleted)
            {
                await BrokerAdmin.DeleteAllAsync(name);
                deletedAgain.SetResult();
            }
        };

        await BrokerAdmin.DeleteAllAsync(queue);
        await deletedAgain.Task.WaitAsync(TimeSpan.FromSeconds(15));
        await Herald.Conformance.Eventually.UntilAsync(async () => await BrokerAdmin.ConsumerCountAsync(queue) == 1, "the queue is back with one consumer");

        var sent = NewEnvelope();
        await transport.PublishAsync(topic, sent);
        await collector.WaitForAsync(1);
        Assert.Equal(sent.MessageId, collector.Envelopes[0].MessageId);

        // Stopping cancels on and closes the new channel: nothing is left consuming the queue.
        await consumer.StopAsync();
        await Herald.Conformance.Eventually.UntilAsync(async () => await BrokerAdmin.ConsumerCountAsync(queue) == 0, "no consumer is left on the queue");
    }

    // Round 4 follow-up: the broker closed the consumer's channel on its own (consumer_timeout's 406, or any channel
    // error) with the connection up; the client reopens channels only with their connection, so the consumer stayed
    // idle for good while the host looked healthy. An ack of an unknown delivery tag stands in for consumer_timeout.
    [Fact]
    public async Task Consume_ChannelClosedByTheBroker_ConsumesAgainOnANewChannelAndHandlesEveryMessage()
    {
        var queue = Name("timedout");
        var transport = await CreateTransportAsync();
        await transport.DeclareQueueAsync(queue);
        var handled = new ConcurrentQueue<Guid>();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumer = (RabbitMqConsumer)await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            started.TrySetResult();
            await release.Task.WaitAsync(ct);
            handled.Enqueue(delivery.Envelope.MessageId);
        });
        var first = NewEnvelope();
        await transport.SendAsync(queue, first);
        await started.Task.WaitAsync(TimeSpan.FromSeconds(15));

        var channel = consumer.ChannelForTests;
        await channel.BasicAckAsync(deliveryTag: 999_999, multiple: false);
        await Herald.Conformance.Eventually.UntilAsync(() => !channel.IsOpen, "the broker closed the consumer's channel");
        release.SetResult();

        // The unacked delivery of the closed channel comes again on the new one; the next is handled too.
        await Herald.Conformance.Eventually.UntilAsync(async () => await BrokerAdmin.ConsumerCountAsync(queue) == 1, "the queue has its consumer again");
        var second = NewEnvelope();
        await transport.SendAsync(queue, second);
        await Herald.Conformance.Eventually.UntilAsync(() => handled.Contains(first.MessageId) && handled.Contains(second.MessageId), "every message was handled");
        Assert.NotSame(channel, consumer.ChannelForTests);

        // Stopping closes the new channel: nothing is left consuming the queue, nothing left unacked.
        await consumer.StopAsync();
        await Herald.Conformance.Eventually.UntilAsync(async () => await BrokerAdmin.ConsumerCountAsync(queue) == 0, "no consumer is left on the queue");
    }

    // Round 7, consumer_timeout: the close is told from other 406s by the broker's text (RabbitMQ 3.10.8's, as sent).
    [Fact]
    public void ConsumerTimeouts_KnowTheBrokersConsumerTimeoutCloseAndItsTimeout()
    {
        var timedOut = new ShutdownEventArgs(
            ShutdownInitiator.Peer,
            406,
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1800000 ms. This timeout value can be configured, see consumers doc guide to learn more");
        Assert.True(ConsumerTimeouts.IsConsumerTimeout(timedOut, out var timeout));
        Assert.Equal(TimeSpan.FromMinutes(30), timeout);

        var unknownTag = new ShutdownEventArgs(ShutdownInitiator.Peer, 406, "PRECONDITION_FAILED - unknown delivery tag 999999");
        Assert.False(ConsumerTimeouts.IsConsumerTimeout(unknownTag, out _));
    }

    // Round 7, consumer_timeout: a delivery still waiting in its lane when its channel was lost was run all the same once
    // its turn came, though the broker had already taken it back and handed it out again: every message queued behind a
    // slow handler the broker cut off ran twice, and behind a handler cut off again and again the lane filled with such
    // copies. It is now passed over; its redelivery is what runs.
    [Fact]
    public async Task Consume_ChannelLostWithDeliveriesWaitingInTheLane_RunsEachOnlyFromItsRedelivery()
    {
        var queue = Name("waiting");
        var transport = await CreateTransportAsync();
        await transport.DeclareQueueAsync(queue);
        var runs = new ConcurrentQueue<Guid>();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var slow = NewEnvelope();
        var waiting = NewEnvelope();
        var consumer = (RabbitMqConsumer)await ConsumeAsync(
            transport,
            queue,
            async (delivery, ct) =>
            {
                runs.Enqueue(delivery.Envelope.MessageId);
                if (delivery.Envelope.MessageId == slow.MessageId)
                {
                    started.TrySetResult();
                    await release.Task.WaitAsync(ct);
                }
            },
            new ConsumerOptions { MaxConcurrency = 1, Prefetch = 10 });
        await transport.SendAsync(queue, slow);
        await transport.SendAsync(queue, waiting);
        await started.Task.WaitAsync(TimeSpan.FromSeconds(15));
        var raw = await CreateRawChannelAsync();
        await Herald.Conformance.Eventually.UntilAsync(async () => (await raw.QueueDeclarePassiveAsync(queue)).MessageCount == 0, "both are delivered, one waiting behind the other");

        var channel = consumer.ChannelForTests;
        await channel.BasicAckAsync(deliveryTag: 999_999, multiple: false);
        await Herald.Conformance.Eventually.UntilAsync(() => !channel.IsOpen, "the broker closed the consumer's channel");
        await Herald.Conformance.Eventually.UntilAsync(async () => await BrokerAdmin.ConsumerCountAsync(queue) == 1, "the queue has its consumer again");
        release.SetResult();

        // One lane: once the last one sent is handled, everything queued before it was run or passed over.
        var last = NewEnvelope();
        await transport.SendAsync(queue, last);
        await Herald.Conformance.Eventually.UntilAsync(() => runs.Contains(last.MessageId), "the last message was handled");
        Assert.Equal(1, runs.Count(id => id == waiting.MessageId));
        await consumer.StopAsync();
    }

    // Round 7, consumer_timeout: a handler that runs longer than the broker's consumer_timeout was cut off (the broker
    // closes the channel with 406 and redelivers), run again, cut off again, for ever. Now a message cut off twice is
    // dead-lettered on its next delivery (through the pipeline, with the reason) instead of run a third time. RabbitMQ
    // 3.10 has the timeout only server-wide and checks it once a minute, so a 406 carrying consumer_timeout's text stands
    // in: an exchange named with that text, declared again with another type on the consumer's channel.
    [Fact]
    public async Task Consume_HandlerCutOffByConsumerTimeoutTwice_IsDeadLetteredInsteadOfRunAgain()
    {
        var queue = Name("slow");
        var exchange = await DeclareCutOffExchangeAsync();
        var transport = await CreateTransportAsync();
        await transport.DeclareQueueAsync(queue);
        var held = new HeldRuns<int>();
        var consumer = (RabbitMqConsumer)await ConsumeAsync(transport, queue, held.Handler(d => d.Envelope.DeliveryAttempt), new ConsumerOptions { MaxConcurrency = 3 });
        var sent = NewEnvelope();
        await transport.SendAsync(queue, sent);

        try
        {
            for (var cut = 0; cut < ConsumerTimeouts.MaxCutOffs; cut++)
            {
                await held.StartedAsync($"run {cut + 1}");
                await CutOffAsync(consumer, exchange);
            }

            var reason = await held.DeadLetteredInsteadOfRunAgainAsync();
            Assert.Contains("consumer_timeout", reason, StringComparison.Ordinal);
            Assert.Equal(ConsumerTimeouts.MaxCutOffs, held.Runs.Count);
        }
        finally
        {
            held.Release();
        }

        await consumer.StopAsync();
    }

    // Stop 40, consumer_timeout across processes: the cut-offs were counted in each consumer's memory only, so a message
    // cut off once in a process that then stopped (a restart, a scale-in) started again from nothing in the next one,
    // and one that always outlives the timeout came back for ever as processes came and went. On a quorum queue the
    // broker's delivery count, which outlives processes, ends it: the delivery after MaxDeliveries unsettled ones is
    // dead-lettered, whichever consumers ran it. (On a classic queue the count stays per process: docs/rabbitmq.md.)
    [Fact]
    public async Task Consume_OnAQuorumQueue_HandlerCutOffByConsumerTimeoutOnceInEachOfTwoTransports_IsDeadLetteredAfterMaxDeliveries()
    {
        var queue = Name("slow-across");
        var exchange = await DeclareCutOffExchangeAsync();
        var held = new HeldRuns<string>();

        try
        {
            // The first process: cut off once, then stopped while it runs the message again (2 unsettled deliveries).
            var first = await CreateTransportAsync(QuorumWithMaxDeliveries(3));
            await first.DeclareQueueAsync(queue);
            var consumer = (RabbitMqConsumer)await ConsumeAsync(first, queue, held.Handler(_ => "first"), new ConsumerOptions { MaxConcurrency = 3 });
            await first.SendAsync(queue, NewEnvelope());
            await held.StartedAsync("the first run");
            await CutOffAsync(consumer, exchange);
            await held.StartedAsync("the second run");
            // Stopped as a host stops at its deadline: the handlers are cancelled, their message handed back.
            await consumer.StopAsync(new CancellationToken(canceled: true));

            // The second process: cut off once (a third unsettled delivery), below MaxCutOffs in this process.
            var second = await CreateTransportAsync(QuorumWithMaxDeliveries(3));
            consumer = (RabbitMqConsumer)await ConsumeAsync(second, queue, held.Handler(_ => "second"), new ConsumerOptions { MaxConcurrency = 3 });
            await held.StartedAsync("the third run");
            await CutOffAsync(consumer, exchange);

            var reason = await held.DeadLetteredInsteadOfRunAgainAsync();
            Assert.Contains("delivered 3 times without being settled", reason, StringComparison.Ordinal);
            Assert.Contains("consumer_timeout", reason, StringComparison.Ordinal);
            Assert.Equal(["first", "first", "second"], held.Runs);
        }
        finally
        {
            held.Release();
        }
    }

    // Stop 40, poison message that kills its host: a message whose handling brings the process down never settles, and
    // the restarted process (or the next one) took it again, for ever. Each crash drops the connection with the delivery
    // unsettled; on a quorum queue the broker counts them, and the delivery after MaxDeliveries is dead-lettered.
    [Fact]
    public async Task Consume_OnAQuorumQueue_ProcessGoingDownWhileHandlingAMessageEachTime_DeadLettersItAfterMaxDeliveries()
    {
        const int maxDeliveries = 3;
        var queue = Name("crash-loop");
        var transport = await CreateTransportAsync(QuorumWithMaxDeliveries(maxDeliveries));
        var held = new HeldRuns<int>();

        // A worker per run: a handler whose connection went down is still held, as a crashed process's would never end.
        await ConsumeAsync(transport, queue, held.Handler(d => d.Envelope.DeliveryAttempt), new ConsumerOptions { MaxConcurrency = maxDeliveries + 1 });
        await transport.SendAsync(queue, NewEnvelope());

        try
        {
            for (var run = 1; run <= maxDeliveries; run++)
            {
                await held.StartedAsync($"run {run}");
                await BrokerAdmin.KillConnectionsAsync(Prefix + ":consume");
            }

            var reason = await held.DeadLetteredInsteadOfRunAgainAsync();
            Assert.Contains($"delivered {maxDeliveries} times without being settled", reason, StringComparison.Ordinal);
            Assert.Equal([1, 2, 3], held.Runs);
        }
        finally
        {
            held.Release();
        }
    }

    // Stop 40: a classic queue keeps no delivery count, so MaxDeliveries does not apply there, even to a message whose
    // sender wrote an x-delivery-count header of its own: a redelivery is handled, however often it came before.
    [Fact]
    public async Task Consume_OnAClassicQueue_RedeliveryIsHandled_WhateverMaxDeliveriesAndAnXDeliveryCountHeaderSay()
    {
        var queue = Name("classic-returns");
        var transport = await CreateTransportAsync(o => o.MaxDeliveries = 1);
        await transport.DeclareQueueAsync(queue);
        var raw = await CreateRawChannelAsync();
        var sent = Guid.CreateVersion7();
        await raw.BasicPublishAsync(string.Empty, queue, mandatory: true, new BasicProperties
        {
            MessageId = sent.ToString(),
            Type = "test-message",
            Timestamp = new AmqpTimestamp(DateTimeOffset.UtcNow.ToUnixTimeSeconds()),
            Headers = new Dictionary<string, object?> { ["cloudEvents:specversion"] = "1.0", ["x-delivery-count"] = 5 },
        }, "{}"u8.ToArray());

        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = await ConsumeAsync(transport, queue, async (_, ct) =>
        {
            started.TrySetResult();
            await Task.Delay(Timeout.Infinite, ct);
        });
        await started.Task.WaitAsync(TimeSpan.FromSeconds(15));
        await first.StopAsync(new CancellationToken(canceled: true));

        var redelivered = new TaskCompletionSource<(Guid Id, int Attempt, Exception? Failure)>(TaskCreationOptions.RunContinuationsAsynchronously);
        await ConsumeAsync(transport, queue, (delivery, _) =>
        {
            redelivered.TrySetResult((delivery.Envelope.MessageId, delivery.Envelope.DeliveryAttempt, delivery.DecodeFailure));
            return ValueTask.CompletedTask;
        });
        var (id, attempt, failure) = await redelivered.Task.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.Null(failure);
        Assert.Equal(sent, id);
        Assert.True(attempt > 1, $"handled as a redelivery (attempt {attempt})");
    }

    /// <summary>
    /// A handler that records each run and holds it until released, as one cut off by consumer_timeout or one whose process
    /// went down never ends, and catches the delivery the consumer hands over dead-lettered instead of to be run.
    /// </summary>
    private sealed class HeldRuns<T>
    {
        private readonly SemaphoreSlim _ran = new(0);
        private readonly TaskCompletionSource<Exception> _deadLettered = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly ConcurrentQueue<T> _runs = new();

        public IReadOnlyList<T> Runs => [.. _runs];

        public DeliveryHandler Handler(Func<Delivery, T> run) => async (delivery, ct) =>
        {
            if (delivery.DecodeFailure is { } failure)
            {
                _deadLettered.TrySetResult(failure);
                return;
            }

            _runs.Enqueue(run(delivery));
            _ran.Release();
            await _release.Task.WaitAsync(ct);
        };

        public async Task StartedAsync(string run) => Assert.True(await _ran.WaitAsync(TimeSpan.FromSeconds(15)), $"{run} started");

        /// <summary>Waits for the dead-lettered delivery, failing if the message runs again first; returns the reason.</summary>
        public async Task<string> DeadLetteredInsteadOfRunAgainAsync()
        {
            var runAgain = _ran.WaitAsync(TimeSpan.FromSeconds(15));
            Assert.True(await Task.WhenAny(_deadLettered.Task, runAgain) == _deadLettered.Task, $"not dead-lettered but run again (or neither); runs: {string.Join(", ", _runs)}");
            return (await _deadLettered.Task).Message;
        }

        public void Release() => _release.TrySetResult();
    }

    private static Action<RabbitMqTransportOptions> QuorumWithMaxDeliveries(int maxDeliveries) => o =>
    {
        o.QueueType = RabbitMqQueueType.Quorum;
        o.MaxDeliveries = maxDeliveries;
    };

    // RabbitMQ 3.10 has the timeout only server-wide and checks it once a minute, so a 406 carrying consumer_timeout's
    // text stands in: an exchange named with that text, declared again with another type on the consumer's channel.
    private async Task<string> DeclareCutOffExchangeAsync()
    {
        var exchange = Name("x delivery acknowledgement on channel 1 timed out. Timeout value used: 0 ms");
        var raw = await CreateRawChannelAsync();
        await raw.ExchangeDeclareAsync(exchange, ExchangeType.Fanout, durable: false, autoDelete: false);
        return exchange;
    }

    private static async Task CutOffAsync(RabbitMqConsumer consumer, string exchange)
    {
        var channel = consumer.ChannelForTests;
        await Assert.ThrowsAnyAsync<Exception>(() => channel.ExchangeDeclareAsync(exchange, ExchangeType.Direct, durable: false, autoDelete: false));
        await Herald.Conformance.Eventually.UntilAsync(() => !channel.IsOpen, "the broker closed the consumer's channel");
    }

    // Round 4 follow-up: the transport health check probes with DeclareQueueAsync, which was answered from Herald's
    // declared-topology cache, so /health stayed Healthy with the endpoint queue deleted or the broker not answering.
    [Fact]
    public async Task DeclareQueue_AfterTheQueueWasDeletedBehindItsBack_AsksTheBrokerAndMakesItAgain()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("probed");
        await transport.DeclareQueueAsync(queue);
        await BrokerAdmin.DeleteAllAsync(queue);

        await transport.DeclareQueueAsync(queue);
        await Herald.Conformance.Eventually.UntilAsync(async () => (await BrokerAdmin.QueueNamesAsync(queue)).Contains(queue), "the queue is made again");
    }

    [Fact]
    public async Task DeclareQueue_WithoutTopologyDeclaration_OnAQueueNobodyMade_FailsWith404()
    {
        var transport = await CreateTransportAsync(o => o.DeclareTopology = false);
        var error = await Assert.ThrowsAsync<HeraldException>(async () => await transport.DeclareQueueAsync(Name("unmade")));
        Assert.Contains("404", error.Message, StringComparison.Ordinal);
        Assert.Empty(await BrokerAdmin.QueueNamesAsync(Prefix));
    }

    // A transport consuming a queue bound to a topic, with one published message handled.
    private async Task<(ITransport Transport, Collector Collector)> ConsumeBoundQueueAsync(string topic, string queue, Action<RabbitMqTransportOptions>? configure = null)
    {
        var transport = await CreateTransportAsync(configure);
        await transport.BindAsync(topic, queue);
        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await transport.PublishAsync(topic, NewEnvelope());
        await collector.WaitForAsync(1);
        return (transport, collector);
    }

    // As an outbox relay would: a publish that failed is not known to be stored, so it is published again.
    private static async Task<Guid> PublishWithRetryAsync(ITransport transport, string topic)
    {
        var envelope = NewEnvelope();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (true)
        {
            try
            {
                await transport.PublishAsync(topic, envelope);
                return envelope.MessageId;
            }
            catch (HeraldException) when (DateTime.UtcNow < deadline)
            {
            }
        }
    }
}
