using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Herald.Messages;
using Herald.Transport;
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
            handled.Add(delivery.Envelope);
            await delivery.DeadLetterAsync("Handler gave up: boom", ct);
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
    public async Task MessageWithoutType_OnANormalQueue_IsDeadLetteredWithTheReasonAndNeverHandled()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("strict");
        await transport.DeclareQueueAsync(queue);
        await transport.DeclareQueueAsync(queue + ".dead-letter");
        var handled = new Collector();
        await ConsumeAsync(transport, queue, handled.Handler);

        var channel = await CreateRawChannelAsync();
        await channel.BasicPublishAsync(string.Empty, queue, false, new BasicProperties { MessageId = Guid.NewGuid().ToString(), Timestamp = new AmqpTimestamp(1_700_000_000) }, Encoding.UTF8.GetBytes("{\"x\":1}"));
        await channel.BasicPublishAsync(string.Empty, queue, false, new BasicProperties
        {
            Headers = new Dictionary<string, object?> { ["cloudEvents:id"] = "not-a-guid", ["cloudEvents:type"] = "t", ["cloudEvents:specversion"] = "1.0" },
        }, Encoding.UTF8.GetBytes("{}"));

        var first = await GetAsync(channel, queue + ".dead-letter");
        var second = await GetAsync(channel, queue + ".dead-letter");
        var reasons = new[] { first, second }.Select(m => Encoding.UTF8.GetString((byte[])m.BasicProperties.Headers!["cloudEvents:" + HeaderNames.DeadLetterReason]!)).ToList();
        Assert.Contains(reasons, r => r.Contains("no type", StringComparison.Ordinal));
        Assert.Contains(reasons, r => r.Contains("not-a-guid", StringComparison.Ordinal) && r.Contains("not a Guid", StringComparison.Ordinal));
        Assert.Equal(0, handled.Count);
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
}
