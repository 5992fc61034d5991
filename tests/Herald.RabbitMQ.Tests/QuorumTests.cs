using Herald.RabbitMQ.Transport;
using System.Collections.Concurrent;
using Herald.Transport;

namespace Herald.RabbitMQ.Tests;

public sealed class QuorumTests : RabbitMqTestBase
{
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
