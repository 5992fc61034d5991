using Herald.RabbitMQ.Transport;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.Time.Testing;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Tests;

public sealed class RetryAndDeadLetterTests : RabbitMqTestBase
{
    [Fact]
    public async Task Nack_WithDelay_ComesBackThroughARetryQueueAfterTheDelay()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("retry");
        var sent = NewEnvelope();
        await transport.SendAsync(queue, sent);

        var deliveries = new ConcurrentQueue<(Envelope Envelope, long At)>();
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            deliveries.Enqueue((delivery.Envelope, Stopwatch.GetTimestamp()));
            if (delivery.Envelope.DeliveryAttempt == 1)
            {
                await delivery.NackAsync(TimeSpan.FromMilliseconds(400), ct);
            }
        });

        await Herald.Conformance.Eventually.UntilAsync(() => deliveries.Count >= 2, "the nacked message came back");
        var (first, firstAt) = deliveries.First();
        var (second, secondAt) = deliveries.Skip(1).First();
        Assert.Equal(sent.MessageId, second.MessageId);
        Assert.Equal(1, first.DeliveryAttempt);
        Assert.Equal(2, second.DeliveryAttempt);
        Assert.True(Stopwatch.GetElapsedTime(firstAt, secondAt) >= TimeSpan.FromMilliseconds(380), $"redelivered after {Stopwatch.GetElapsedTime(firstAt, secondAt)}");
        Assert.Equal(sent.Body.ToArray(), second.Body.ToArray());
        Assert.Contains(queue + ".retry.400", await BrokerAdmin.QueueNamesAsync(queue));
    }

    [Fact]
    public async Task Nack_WithoutDelay_RedeliversWithTheAttemptIncremented()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("nack");
        await transport.SendAsync(queue, NewEnvelope());
        var attempts = new ConcurrentQueue<int>();
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            attempts.Enqueue(delivery.Envelope.DeliveryAttempt);
            if (delivery.Envelope.DeliveryAttempt < 4)
            {
                await delivery.NackAsync(TimeSpan.Zero, ct);
            }
        });

        await Herald.Conformance.Eventually.UntilAsync(() => attempts.Count >= 4, "four deliveries");
        Assert.Equal([1, 2, 3, 4], attempts.ToArray());
    }

    [Fact]
    public async Task Send_WithDelay_IsNotDeliveredBeforeTheDelay()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("later");
        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);

        var started = Stopwatch.GetTimestamp();
        await transport.SendAsync(queue, NewEnvelope(), new SendOptions { Delay = TimeSpan.FromMilliseconds(500) });
        await transport.SendAsync(queue, NewEnvelope());
        await collector.WaitForAsync(1);
        Assert.Equal(1, collector.Count);
        await collector.WaitForAsync(2);
        Assert.True(Stopwatch.GetElapsedTime(started) >= TimeSpan.FromMilliseconds(480));
        Assert.All(collector.Envelopes, e => Assert.Equal(1, e.DeliveryAttempt));
    }

    [Fact]
    public async Task Publish_WithDelay_FansOutAfterTheDelay()
    {
        var transport = await CreateTransportAsync();
        var topic = Name("reminders");
        var a = Name("a");
        var b = Name("b");
        await transport.BindAsync(topic, a);
        await transport.BindAsync(topic, b);
        var started = Stopwatch.GetTimestamp();
        await transport.PublishAsync(topic, NewEnvelope(), new SendOptions { Delay = TimeSpan.FromMilliseconds(300) });

        var ca = new Collector();
        var cb = new Collector();
        await ConsumeAsync(transport, a, ca.Handler);
        await ConsumeAsync(transport, b, cb.Handler);
        await ca.WaitForAsync(1);
        await cb.WaitForAsync(1);
        Assert.True(Stopwatch.GetElapsedTime(started) >= TimeSpan.FromMilliseconds(280));
    }

    [Fact]
    public async Task DeadLetter_MovesTheMessageToTheDeadLetterQueueWithTheReason()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("poison");
        var sent = NewEnvelope("order-placed") with { CorrelationId = "c-1" };
        await transport.SendAsync(queue, sent);
        var handled = new Collector();
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            // Recorded once the dead letter is published: the dead-letter queue is declared on first use.
            await delivery.DeadLetterAsync("Handler gave up: boom", ct);
            handled.Add(delivery.Envelope);
        });

        await handled.WaitForAsync(1);
        var channel = await CreateRawChannelAsync();
        var dead = await GetAsync(channel, queue + ".dead-letter");
        Assert.Equal("Handler gave up: boom", Encoding.UTF8.GetString((byte[])dead.BasicProperties.Headers!["cloudEvents:" + HeaderNames.DeadLetterReason]!));
        Assert.Equal(queue, Encoding.UTF8.GetString((byte[])dead.BasicProperties.Headers!["x-herald-origin-queue"]!));
        Assert.Equal(1, dead.BasicProperties.Headers!["x-herald-attempt"]);
        Assert.Equal(sent.MessageId.ToString(), dead.BasicProperties.MessageId);
        Assert.Equal(sent.Body.ToArray(), dead.Body.ToArray());
        Assert.Equal(0u, (await channel.QueueDeclarePassiveAsync(queue)).MessageCount);

        // Read back through Herald, the dead letter is the same envelope plus the reason.
        var reader = new Collector();
        await ConsumeAsync(transport, queue + ".dead-letter", reader.Handler);
        await transport.SendAsync(queue, sent);
        await reader.WaitForAsync(1);
        var envelope = reader.Envelopes[0];
        Assert.Equal(sent.MessageId, envelope.MessageId);
        Assert.Equal("c-1", envelope.CorrelationId);
        Assert.Equal("Handler gave up: boom", envelope.GetHeader(HeaderNames.DeadLetterReason));
    }

    [Fact]
    public async Task DeadLetter_OfAMessageWithAnExpiration_KeepsNoExpirationInTheDeadLetterQueue()
    {
        // Another client's message with a per-message TTL: copied as it was, the dead letter expired out of the dead-letter
        // queue (which dead-letters nowhere) before it was drained. RabbitMQ's own dead-lettering drops the expiration too.
        var transport = await CreateTransportAsync();
        var queue = Name("short-lived");
        await transport.DeclareQueueAsync(queue);
        var properties = AmqpEnvelopeCodec.Encode(NewEnvelope(), "/test");
        properties.Expiration = "600000";
        var channel = await CreateRawChannelAsync();
        await channel.BasicPublishAsync(string.Empty, queue, mandatory: true, properties, NewEnvelope().Body);

        var handled = new Collector();
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            await delivery.DeadLetterAsync("Handler gave up", ct);
            handled.Add(delivery.Envelope);
        });

        await handled.WaitForAsync(1);
        var dead = await GetAsync(channel, queue + ".dead-letter");
        Assert.False(dead.BasicProperties.IsExpirationPresent(), $"The dead letter expires after {dead.BasicProperties.Expiration} ms.");
    }

    [Fact]
    public async Task Nack_WithDelay_OfAMessageWithAShorterExpiration_ComesBackOnlyAfterTheDelay()
    {
        // Another client's message with a per-message TTL shorter than the retry delay: copied with it into the retry
        // queue, it expired there at its own TTL and dead-lettered back into the queue early, so back-offs were cut short.
        var transport = await CreateTransportAsync();
        var queue = Name("expiring-retry");
        await transport.DeclareQueueAsync(queue);
        var deliveries = new ConcurrentQueue<(int Attempt, long At)>();
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            deliveries.Enqueue((delivery.Envelope.DeliveryAttempt, Stopwatch.GetTimestamp()));
            if (delivery.Envelope.DeliveryAttempt == 1)
            {
                await delivery.NackAsync(TimeSpan.FromMilliseconds(2000), ct);
            }
        });

        // Published once the consumer is there, so it is delivered well within its own TTL.
        var properties = AmqpEnvelopeCodec.Encode(NewEnvelope(), "/test");
        properties.Expiration = "300";
        var channel = await CreateRawChannelAsync();
        await channel.BasicPublishAsync(string.Empty, queue, mandatory: true, properties, NewEnvelope().Body);

        await Herald.Conformance.Eventually.UntilAsync(() => deliveries.Count >= 2, "the nacked message came back");
        var (firstAttempt, firstAt) = deliveries.First();
        var (secondAttempt, secondAt) = deliveries.Skip(1).First();
        Assert.Equal((1, 2), (firstAttempt, secondAttempt));
        Assert.True(Stopwatch.GetElapsedTime(firstAt, secondAt) >= TimeSpan.FromMilliseconds(1980), $"redelivered after {Stopwatch.GetElapsedTime(firstAt, secondAt)}");
    }

    [Fact]
    public async Task MalformedMessages_OnANormalQueue_ReachTheHandlerAsUndecodableWithTheReason_NotAsMessages()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("strict");
        await transport.DeclareQueueAsync(queue);
        var failures = new ConcurrentQueue<(Exception? Failure, Envelope Envelope)>();
        await ConsumeAsync(transport, queue, (delivery, _) =>
        {
            failures.Enqueue((delivery.DecodeFailure, delivery.Envelope));
            return ValueTask.CompletedTask;
        });

        var channel = await CreateRawChannelAsync();
        var untypedId = Guid.NewGuid();
        await channel.BasicPublishAsync(string.Empty, queue, false, new BasicProperties { MessageId = untypedId.ToString(), Timestamp = new AmqpTimestamp(1_700_000_000) }, Encoding.UTF8.GetBytes("{\"x\":1}"));
        await channel.BasicPublishAsync(string.Empty, queue, false, new BasicProperties
        {
            Headers = new Dictionary<string, object?> { ["cloudEvents:id"] = "not-a-guid", ["cloudEvents:type"] = "t", ["cloudEvents:specversion"] = "1.0" },
        }, Encoding.UTF8.GetBytes("{}"));

        await Herald.Conformance.Eventually.UntilAsync(() => failures.Count == 2, "both deliveries reached the handler");
        Assert.All(failures, f => Assert.IsType<MalformedMessageException>(f.Failure));
        var untyped = Assert.Single(failures, f => f.Failure!.Message.Contains("no type", StringComparison.Ordinal));
        Assert.Equal(untypedId, untyped.Envelope.MessageId);
        Assert.Equal("{\"x\":1}", Encoding.UTF8.GetString(untyped.Envelope.Body.Span));
        var badId = Assert.Single(failures, f => f.Failure!.Message.Contains("not-a-guid", StringComparison.Ordinal));
        Assert.Contains("not a Guid", badId.Failure!.Message, StringComparison.Ordinal);
        Assert.Equal("t", badId.Envelope.MessageType);
    }

    [Fact]
    public async Task UndecodableDelivery_WhoseHandlerThrows_GoesToTheDeadLetterQueue_NotRoundAgain()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("throws");
        await transport.DeclareQueueAsync(queue);
        await transport.DeclareQueueAsync(queue + ".dead-letter");
        var seen = 0;
        await ConsumeAsync(transport, queue, (_, _) =>
        {
            Interlocked.Increment(ref seen);
            throw new InvalidOperationException("this handler cannot cope");
        });

        var channel = await CreateRawChannelAsync();
        await channel.BasicPublishAsync(string.Empty, queue, false, new BasicProperties { Timestamp = new AmqpTimestamp(1_700_000_000) }, Encoding.UTF8.GetBytes("{}"));

        var dead = await GetAsync(channel, queue + ".dead-letter");
        Assert.Contains("no id", Encoding.UTF8.GetString((byte[])dead.BasicProperties.Headers!["cloudEvents:" + HeaderNames.DeadLetterReason]!), StringComparison.Ordinal);
        Assert.Equal(1, Volatile.Read(ref seen));
    }

    [Fact]
    public async Task Nack_WithHeaders_TheCopyCarriesThemThroughTheRetryQueue()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("carry");
        await transport.SendAsync(queue, NewEnvelope());
        var deliveries = new ConcurrentQueue<Envelope>();
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            deliveries.Enqueue(delivery.Envelope);
            if (delivery.Envelope.DeliveryAttempt == 1)
            {
                await delivery.NackAsync(TimeSpan.FromMilliseconds(100), new Dictionary<string, string> { [HeaderNames.FirstFailure] = "2030-01-02T03:00:00.0000000+00:00" }, ct);
            }
        });

        await Herald.Conformance.Eventually.UntilAsync(() => deliveries.Count >= 2, "the nacked message came back");
        Assert.Null(deliveries.First().GetHeader(HeaderNames.FirstFailure));
        Assert.Equal("2030-01-02T03:00:00.0000000+00:00", deliveries.Skip(1).First().GetHeader(HeaderNames.FirstFailure));
    }

    [Fact]
    public async Task Send_WithADelayOfWeeks_GoesOnlyToARetryQueueThatCannotExpireBeforeTheMessageLeavesIt()
    {
        // A retry queue expires once unused for x-expires since it was last declared (publishing to it does not count), and
        // takes its messages with it. So every message the transport publishes there without declaring it again must leave
        // (after x-message-ttl) before then. Above 12.4 days, x-expires was capped at 2^31 - 1 ms, within the re-declare window.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var transport = await CreateTransportAsync(timeProvider: clock);
        var queue = Name("weeks");
        var later = new SendOptions { Delay = TimeSpan.FromDays(20) };
        for (var days = 1; days <= 30; days++)
        {
            // Declared now (the last round's returned send made the transport forget it).
            await transport.SendAsync(queue, NewEnvelope(), later);
            var retryQueue = Assert.Single(await BrokerAdmin.QueueNamesAsync(queue + ".retry."));
            var arguments = (await BrokerAdmin.QueueArgumentsAsync(retryQueue)).GetProperty("arguments");
            var ttl = TimeSpan.FromMilliseconds(arguments.GetProperty("x-message-ttl").GetInt64());
            var expires = TimeSpan.FromMilliseconds(arguments.GetProperty("x-expires").GetInt64());

            // Deleted behind the transport's back: a send returned as unroutable shows it was not declared again.
            clock.Advance(TimeSpan.FromDays(days));
            await BrokerAdmin.DeleteAllAsync(retryQueue);
            var error = await Record.ExceptionAsync(async () => await transport.SendAsync(queue, NewEnvelope(), later));
            if (error is null)
            {
                return;
            }

            Assert.Contains("could not route", Assert.IsType<HeraldException>(error).Message, StringComparison.Ordinal);
            Assert.True(TimeSpan.FromDays(days) + ttl < expires, $"Published {days} days after the declaration, the message leaves at {TimeSpan.FromDays(days) + ttl}, after the queue expires at {expires}.");
        }

        Assert.Fail("The transport never declared the retry queue again.");
    }

    /// <summary>
    /// A retry copy the broker refused (its retry queue full with reject-publish, or gone) made the consumer hand the delivery
    /// back to its queue at once: the broker redelivered it, the handler failed again, the copy was refused again, as fast as
    /// the broker could, for as long as the retry queue refused. It now waits one <c>NetworkRecoveryInterval</c> before it
    /// goes back, as a delivery the dead-letter store and queue both refused does.
    /// </summary>
    [Fact]
    public async Task Nack_WithDelay_WhenTheRetryQueueRefusesTheCopy_GoesBackOnlyAfterARecoveryInterval_NoRedeliveryLoop()
    {
        var interval = TimeSpan.FromMilliseconds(500);
        var queue = Name("refused");
        var retryQueue = Name("refusing-retry");
        var raw = await CreateRawChannelAsync();
        await raw.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false);
        await raw.QueueDeclareAsync(retryQueue, durable: true, exclusive: false, autoDelete: false, new Dictionary<string, object?>
        {
            ["x-max-length"] = 0,
            ["x-overflow"] = "reject-publish",
        });

        // Herald declares nothing here, so the retry queue stays the refusing one declared above.
        var transport = await CreateTransportAsync(o =>
        {
            o.DeclareTopology = false;
            o.NetworkRecoveryInterval = interval;
            o.RetryQueueName = (_, _) => retryQueue;
        });
        var runs = new ConcurrentQueue<long>();
        var refused = new ConcurrentQueue<Exception>();
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            runs.Enqueue(Stopwatch.GetTimestamp());
            try
            {
                await delivery.NackAsync(TimeSpan.FromSeconds(1), ct);
            }
            catch (HeraldException e)
            {
                refused.Enqueue(e);
            }
        });
        await transport.SendAsync(queue, NewEnvelope());

        await Herald.Conformance.Eventually.UntilAsync(() => runs.Count >= 3, "the message is run three times");
        Assert.NotEmpty(refused);
        var times = runs.ToArray();
        for (var i = 1; i < 3; i++)
        {
            var gap = Stopwatch.GetElapsedTime(times[i - 1], times[i]);
            Assert.True(gap >= interval * 0.9, $"redelivered {gap.TotalMilliseconds:F0} ms after its retry copy was refused, not after the {interval.TotalMilliseconds} ms recovery interval");
        }
    }

    // Stop 42: a sender may set the AMQP user_id, which the broker checks against the login of whoever publishes it. The
    // retry and dead-letter copies carried it over, so, published under Herald's login, the broker refused each one (406,
    // closing the channel): the message went back to the queue after the recovery interval and came round again for ever,
    // neither retried nor dead-lettered.
    [Fact]
    public async Task RetryAndDeadLetter_OfAMessageWhoseUserIdIsAnotherLogin_AreStoredInsteadOfRefusedForEver()
    {
        var sender = Prefix + "-sender";
        await BrokerAdmin.CreateUserAsync(sender);
        try
        {
            var transport = await CreateTransportAsync();
            var queue = Name("foreign-user");
            await transport.DeclareQueueAsync(queue);
            var messageId = Guid.NewGuid().ToString();
            var connection = await BrokerAdmin.ConnectAsync(Prefix + "-sender", sender);
            await using (connection)
            {
                await using var channel = await connection.CreateChannelAsync();
                var properties = PlainClientProperties(messageId);
                properties.UserId = sender;
                await channel.BasicPublishAsync(string.Empty, queue, mandatory: true, properties, "{}"u8.ToArray());
            }

            var attempts = new ConcurrentQueue<int>();
            var refused = new ConcurrentQueue<Exception>();
            await ConsumeAsync(transport, queue, async (delivery, ct) =>
            {
                attempts.Enqueue(delivery.Envelope.DeliveryAttempt);
                try
                {
                    switch (delivery.Envelope.DeliveryAttempt)
                    {
                        case 1: await delivery.NackAsync(TimeSpan.FromMilliseconds(100), ct); break;
                        case 2: await delivery.NackAsync(TimeSpan.Zero, ct); break;
                        default: await delivery.DeadLetterAsync("Handler gave up", ct); break;
                    }
                }
                catch (HeraldException e)
                {
                    refused.Enqueue(e);
                }
            });

            await Herald.Conformance.Eventually.UntilAsync(() => attempts.Count >= 3, "the message is run three times");
            Assert.True(refused.IsEmpty, $"runs {string.Join(", ", attempts)}; refused: {refused.FirstOrDefault()?.Message}");
            Assert.Equal([1, 2, 3], attempts.Take(3));
            await Herald.Conformance.Eventually.UntilAsync(async () => (await BrokerAdmin.QueueNamesAsync(queue)).Contains(queue + ".dead-letter"), "the dead-letter queue is declared");
            var dead = await GetAsync(await CreateRawChannelAsync(), queue + ".dead-letter");
            Assert.Equal(messageId, dead.BasicProperties.MessageId);
        }
        finally
        {
            await BrokerAdmin.DeleteUserAsync(sender);
        }
    }

    // Stop 42: the retry copy carried over the delivered message's x-death header, which the broker reads when the retry
    // queue dead-letters the copy back. A plain client's x-death that is not a list of tables (here ["a", 1]) crashed the
    // retry queue's process on RabbitMQ 3.10 (function_clause in rabbit_dead_letter) each time the copy's TTL ran out:
    // neither it nor any other message waiting for the same delay of that queue came back.
    [Fact]
    public async Task NackWithDelay_OfAMessageWithAForeignXDeathHeader_ComesBack_AndSoDoOthersWaitingForTheSameDelay()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("x-death");
        await transport.DeclareQueueAsync(queue);
        var raw = await CreateRawChannelAsync();
        var poison = Guid.NewGuid();
        var properties = PlainClientProperties(poison.ToString());
        properties.Headers = new Dictionary<string, object?> { ["x-death"] = new List<object?> { "a", 1 } };
        await raw.BasicPublishAsync(string.Empty, queue, mandatory: true, properties, "{}"u8.ToArray());
        var good = NewEnvelope();
        await transport.SendAsync(queue, good);

        var runs = new ConcurrentQueue<(Guid Id, int Attempt)>();
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            runs.Enqueue((delivery.Envelope.MessageId, delivery.Envelope.DeliveryAttempt));
            if (delivery.Envelope.DeliveryAttempt == 1)
            {
                await delivery.NackAsync(TimeSpan.FromMilliseconds(50), ct);
            }
        });

        await Herald.Conformance.Eventually.UntilAsync(() => runs.Count >= 4, "both messages came back from the retry queue").ContinueWith(_ => { });
        Assert.Equal([(good.MessageId, 1), (good.MessageId, 2), (poison, 1), (poison, 2)], runs.OrderBy(r => r.Id == poison).ThenBy(r => r.Attempt));
    }

    // Stop 42: the retry and dead-letter copies carried over a sender's CC header (RabbitMQ's sender-selected distribution,
    // which the broker keeps on the delivered message), so publishing each copy routed one more copy to every queue the
    // sender had named: a message sent to this queue with CC another was duplicated into the other at each retry.
    [Fact]
    public async Task RetryAndDeadLetter_OfAMessageSentWithCC_DoNotCopyItAgainToTheQueuesItNamed()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("cc");
        var other = Name("cc-other");
        await transport.DeclareQueueAsync(queue);
        var raw = await CreateRawChannelAsync();
        await raw.QueueDeclareAsync(other, durable: false, exclusive: false, autoDelete: false);
        var properties = PlainClientProperties(Guid.NewGuid().ToString());
        properties.Headers = new Dictionary<string, object?> { ["CC"] = new List<object?> { other } };
        await raw.BasicPublishAsync(string.Empty, queue, mandatory: true, properties, "{}"u8.ToArray());

        var attempts = new ConcurrentQueue<int>();
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            attempts.Enqueue(delivery.Envelope.DeliveryAttempt);
            switch (delivery.Envelope.DeliveryAttempt)
            {
                case 1: await delivery.NackAsync(TimeSpan.FromMilliseconds(50), ct); break;
                case 2: await delivery.NackAsync(TimeSpan.Zero, ct); break;
                default: await delivery.DeadLetterAsync("Handler gave up", ct); break;
            }
        });

        await Herald.Conformance.Eventually.UntilAsync(async () => (await BrokerAdmin.QueueNamesAsync(queue)).Contains(queue + ".dead-letter"), "the dead-letter queue is declared");
        await GetAsync(raw, queue + ".dead-letter");
        Assert.Equal([1, 2, 3], attempts);
        Assert.Equal(1u, (await raw.QueueDeclarePassiveAsync(other)).MessageCount);
    }

    // Stop 42: a queue name of up to 255 bytes was consumed, but its retry queue's name ({queue}.retry.{ms}) was longer
    // than an AMQP short string holds: every delayed nack failed in the client's encoding, and the message came back
    // after the recovery interval at the same attempt, for ever (runs 1, 2, 2, 2, ...). Refused at start instead.
    [Fact]
    public async Task Consume_OfAQueueWhoseRetryQueueNameWouldPassTheNameLimit_IsRefusedAtStart()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("long-");
        queue += new string('q', 250 - queue.Length);

        var error = await Assert.ThrowsAsync<ArgumentException>(() => transport.ConsumeAsync(queue, ConsumerOptions.Default, (_, _) => ValueTask.CompletedTask).AsTask());
        Assert.Contains(".retry.", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(queue, await BrokerAdmin.QueueNamesAsync(Prefix));

        // The longest name that leaves room for its retry queue at the longest delay ({queue}.retry.2147483647) is consumed.
        var longest = queue[..(255 - ".retry.2147483647".Length)];
        await ConsumeAsync(transport, longest, (_, _) => ValueTask.CompletedTask);
    }

    [Fact]
    public void BucketDelay_RoundsUpToTwoSignificantDigitsOfMilliseconds()
    {
        Assert.Equal(TimeSpan.FromMilliseconds(1), RabbitMqTransport.BucketDelay(TimeSpan.FromTicks(1)));
        Assert.Equal(TimeSpan.FromMilliseconds(57), RabbitMqTransport.BucketDelay(TimeSpan.FromMilliseconds(56.2)));
        Assert.Equal(TimeSpan.FromMilliseconds(400), RabbitMqTransport.BucketDelay(TimeSpan.FromMilliseconds(400)));
        Assert.Equal(TimeSpan.FromMilliseconds(1300), RabbitMqTransport.BucketDelay(TimeSpan.FromMilliseconds(1234)));
        Assert.Equal(TimeSpan.FromMilliseconds(1000), RabbitMqTransport.BucketDelay(TimeSpan.FromMilliseconds(999.5)));
        Assert.Equal(TimeSpan.FromSeconds(3600), RabbitMqTransport.BucketDelay(TimeSpan.FromSeconds(3600)));
        Assert.Throws<ArgumentOutOfRangeException>(() => RabbitMqTransport.BucketDelay(TimeSpan.FromDays(30)));
    }

    // What a plain AMQP client sends for a message Herald reads: an id, a type and a timestamp in the properties.
    private static BasicProperties PlainClientProperties(string messageId) => new()
    {
        MessageId = messageId,
        Type = "test-message",
        Timestamp = new AmqpTimestamp(DateTimeOffset.UtcNow.ToUnixTimeSeconds()),
    };
}
