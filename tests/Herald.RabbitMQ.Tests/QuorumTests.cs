using Herald.RabbitMQ.Transport;
using System.Collections.Concurrent;
using Herald.Transport;

namespace Herald.RabbitMQ.Tests;

public sealed class QuorumTests : RabbitMqTestBase
{
    // Stop 40: RabbitMQ 4.3 split the count: x-delivery-count counts only returns it takes for failures, x-acquired-count
    // every return; the delivery limit reads the larger (before 4.3 only the first is there, counting every return).
    [Theory]
    [InlineData(null, null, null)]
    [InlineData(3, null, 3)]
    [InlineData(null, 4, 4)]
    [InlineData(1, 5, 5)]
    [InlineData(6, 2, 6)]
    public void UnsettledDeliveries_IsTheLargerOfTheBrokersTwoCounts(int? deliveryCount, int? acquiredCount, int? expected)
    {
        var headers = new Dictionary<string, object?> { ["cloudEvents:specversion"] = "1.0" };
        if (deliveryCount is { } d)
        {
            headers["x-delivery-count"] = (long)d;
        }

        if (acquiredCount is { } a)
        {
            headers["x-acquired-count"] = (long)a;
        }

        Assert.Equal(expected, AmqpEnvelopeCodec.UnsettledDeliveries(new global::RabbitMQ.Client.BasicProperties { Headers = headers }));
    }

    // A retry copy is a new message to the broker: it must not carry the original's counts into its own delivery limit.
    [Fact]
    public void CopyForRepublish_LeavesTheBrokersDeliveryCountsBehind()
    {
        var delivered = new global::RabbitMQ.Client.BasicProperties
        {
            MessageId = Guid.NewGuid().ToString(),
            Headers = new Dictionary<string, object?> { ["x-delivery-count"] = 3L, ["x-acquired-count"] = 4L },
        };

        Assert.Null(AmqpEnvelopeCodec.UnsettledDeliveries(AmqpEnvelopeCodec.CopyForRepublish(delivered, 1, deadLetterReason: null, originQueue: null)));
    }

    [Fact]
    public async Task QuorumQueues_RoundTrip_RetryAndDeadLetter()
    {
        var transport = await CreateTransportAsync(o => o.QueueType = RabbitMqQueueType.Quorum);
        var queue = Name("quorum");
        var sent = NewEnvelope();
        await transport.SendAsync(queue, sent);

        var attempts = new ConcurrentQueue<int>();
        var finished = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            attempts.Enqueue(delivery.Envelope.DeliveryAttempt);
            switch (delivery.Envelope.DeliveryAttempt)
            {
                case 1:
                    throw new InvalidOperationException("first attempt fails");
                case 2:
                    await delivery.NackAsync(TimeSpan.FromMilliseconds(200), ct);
                    break;
                default:
                    await delivery.DeadLetterAsync("gave up", ct);
                    finished.TrySetResult();
                    break;
            }
        });

        await finished.Task.WaitAsync(TimeSpan.FromSeconds(15));
        Assert.Equal([1, 2, 3], attempts.ToArray());
        Assert.Equal("quorum", (await BrokerAdmin.QueueArgumentsAsync(queue)).GetProperty("type").GetString());
        Assert.Equal("quorum", (await BrokerAdmin.QueueArgumentsAsync(queue + ".retry.200")).GetProperty("type").GetString());
        var channel = await CreateRawChannelAsync();
        var dead = await GetAsync(channel, queue + ".dead-letter");
        Assert.Equal(sent.MessageId.ToString(), dead.BasicProperties.MessageId);
    }

    [Fact]
    public async Task QuorumQueue_BrokerRedelivery_CountsTheAttemptFromXDeliveryCount()
    {
        var transport = await CreateTransportAsync(o => o.QueueType = RabbitMqQueueType.Quorum);
        var queue = Name("quorum-returns");
        await transport.SendAsync(queue, NewEnvelope());

        // A consumer stopped with a cancelled token hands the in-flight delivery back to the broker (basic requeue).
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (_, ct) =>
        {
            started.TrySetResult();
            await Task.Delay(Timeout.Infinite, ct);
        });
        await started.Task.WaitAsync(TimeSpan.FromSeconds(15));
        await first.StopAsync(new CancellationToken(canceled: true));
        await first.DisposeAsync();

        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await collector.WaitForAsync(1);
        Assert.Equal(2, collector.Envelopes[0].DeliveryAttempt);
    }
}
