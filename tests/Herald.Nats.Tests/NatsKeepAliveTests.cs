using Herald.Conformance;
using Herald.Nats.Transport;
using Herald.Transport;

namespace Herald.Nats.Tests;

/// <summary>The keep-alive (<c>+WPI</c>) of a running consumer follows the ack wait its durable has on the server now, not the one it had at the start.</summary>
public sealed class NatsKeepAliveTests : NatsTestBase
{
    /// <summary>
    /// Stop 43: the keep-alive's pace was set once, from the durable's ack wait at the start. An ack wait shortened on the
    /// server meanwhile (an operator's edit, or the durable made again by another process with its own option) was
    /// outlived by every handler longer than it: the server delivered the message again while it still ran.
    /// </summary>
    [Fact]
    public async Task AnAckWaitShortenedOnTheServerWhileConsuming_IsKeptAliveAtItsPace_AndALongHandlersMessageIsDeliveredOnce()
    {
        var ackWait = TimeSpan.FromSeconds(2);
        var transport = await CreateTransportAsync(o => o.AckWait = TimeSpan.FromSeconds(30));
        var queue = "shortened-" + Guid.NewGuid().ToString("N")[..8];
        var slow = NewEnvelope("slow");
        var (consumer, seen) = await ConsumeAsync(transport, queue, async (delivery, cancellationToken) =>
        {
            if (delivery.Envelope.MessageId == slow.MessageId)
            {
                // Outlives the new ack wait twice over: without a keep-alive at its pace the idle second worker gets it again.
                await Task.Delay(ackWait * 2.5, cancellationToken);
            }
        }, new ConsumerOptions { MaxConcurrency = 2 });
        await using (consumer)
        {
            var stream = Names.QueueStream(queue);
            var config = (await transport.JetStream.GetConsumerAsync(stream, NatsNames.Durable(queue))).Info.Config;
            config.AckWait = ackWait;
            await transport.JetStream.CreateOrUpdateConsumerAsync(stream, config);

            // What the lag refresh does on its timer: the consumer reads its durable from the server again.
            await ((NatsConsumer)consumer).RefreshLagNowAsync();
            await transport.SendAsync(queue, slow);

            await Eventually.UntilAsync(() => seen.Any(e => e.MessageId == slow.MessageId), "the slow message is delivered");
            await Eventually.UntilAsync(async () => (await transport.JetStream.GetStreamAsync(stream)).Info.State.Messages == 0, "the slow message is acked", Timeout);
        }

        Assert.Equal(1, seen.Count(e => e.MessageId == slow.MessageId));
    }
}
