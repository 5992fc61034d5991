using Herald.RabbitMQ.Transport;
using System.Text;
using Herald.Conformance;
using Herald.Transport;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// Coalesced acks (AckBatcher) against the real broker: what a multiple ack covers, that it never passes a delivery
/// settled on its own (the broker would close the channel with "unknown delivery tag"), and that nothing handled is
/// handed out again when the consumer stops.
/// </summary>
public sealed class AckBatchingTests : RabbitMqTestBase
{
    [Fact]
    public async Task Flush_AcksTheLeadingRunAtOnce_AndSingleAcksBehindAGap()
    {
        var (channel, queue, tags) = await GetUnackedAsync("run", 6);
        var clock = new FakeTimeProvider();
        await using var acks = new AckBatcher(channel, batchSize: 100, TimeSpan.FromMilliseconds(2), clock, queue, NullLogger.Instance);
        foreach (var tag in tags)
        {
            acks.Received(tag, generation: 0);
        }

        // Handled out of order: 3, 1, 2 and 6; 4 handed back; 5 still running.
        await acks.AckAsync(tags[2], 0, default);
        await acks.AckAsync(tags[0], 0, default);
        await acks.AckAsync(tags[1], 0, default);
        await acks.RequeueAsync(tags[3], 0, default);
        await acks.AckAsync(tags[5], 0, default);
        Assert.Equal(4, acks.PendingCount);

        await acks.FlushAsync();
        Assert.Equal(0, acks.PendingCount);
        await AssertChannelHealthyAsync(channel, queue);

        // Closing the channel returns what was never acked: 4 (requeued) and 5 (still running); 1, 2, 3 and 6 are gone.
        await channel.CloseAsync();
        Assert.Equal(["m4", "m5"], await DrainBodiesAsync(queue, 2));
    }

    [Fact]
    public async Task Flush_AfterAnEarlierDeliveryWasRequeued_DoesNotFailTheChannel()
    {
        var (channel, queue, tags) = await GetUnackedAsync("gap", 4);
        await using var acks = new AckBatcher(channel, batchSize: 100, TimeSpan.FromMilliseconds(2), new FakeTimeProvider(), queue, NullLogger.Instance);
        foreach (var tag in tags)
        {
            acks.Received(tag, 0);
        }

        // 2 is settled on its own first; the multiple ack of 1..3 must skip it without naming it.
        await acks.RequeueAsync(tags[1], 0, default);
        await acks.AckAsync(tags[0], 0, default);
        await acks.AckAsync(tags[2], 0, default);
        await acks.FlushAsync();
        await AssertChannelHealthyAsync(channel, queue);

        await channel.CloseAsync();
        Assert.Equal(["m2", "m4"], await DrainBodiesAsync(queue, 2));
    }

    [Fact]
    public async Task Ack_SentWhenTheBatchIsFull_OrWhenTheDelayPasses()
    {
        var (channel, queue, tags) = await GetUnackedAsync("timer", 5);
        var clock = new FakeTimeProvider();
        await using var acks = new AckBatcher(channel, batchSize: 3, TimeSpan.FromMilliseconds(2), clock, queue, NullLogger.Instance);
        foreach (var tag in tags)
        {
            acks.Received(tag, 0);
        }

        await acks.AckAsync(tags[0], 0, default);
        await acks.AckAsync(tags[1], 0, default);
        Assert.Equal(2, acks.PendingCount);
        await acks.AckAsync(tags[2], 0, default);
        Assert.Equal(0, acks.PendingCount);

        await acks.AckAsync(tags[3], 0, default);
        Assert.Equal(1, acks.PendingCount);
        clock.Advance(TimeSpan.FromMilliseconds(2));
        await Eventually.UntilAsync(() => acks.PendingCount == 0, "the delayed flush ran");
        await AssertChannelHealthyAsync(channel, queue);

        await channel.CloseAsync();
        Assert.Equal(["m5"], await DrainBodiesAsync(queue, 1));
    }

    [Fact]
    public async Task Ack_HeldBackByARunningDelivery_WaitsForIt_ThenGoesSinglyAfterAWholeDelay()
    {
        var (channel, queue, tags) = await GetUnackedAsync("held-back", 5);
        var clock = new FakeTimeProvider();
        await using var acks = new AckBatcher(channel, batchSize: 100, TimeSpan.FromMilliseconds(2), clock, queue, NullLogger.Instance);
        foreach (var tag in tags)
        {
            acks.Received(tag, 0);
        }

        // 1 and 4 still running: 2 and 3 wait for 1, so one multiple ack can cover them all when it finishes.
        await acks.AckAsync(tags[1], 0, default);
        await acks.AckAsync(tags[2], 0, default);
        clock.Advance(TimeSpan.FromMilliseconds(2));
        Assert.Equal(2, acks.PendingCount);

        // 1 finishes: the run 1..3 goes at the next flush, 5 stays behind 4.
        await acks.AckAsync(tags[0], 0, default);
        await acks.AckAsync(tags[4], 0, default);
        clock.Advance(TimeSpan.FromMilliseconds(2));
        await Eventually.UntilAsync(() => acks.PendingCount == 1, "the run 1..3 was acked");

        // 4 still holds 5 back a whole delay later: 5 is acked on its own, so a slow message does not hold the window.
        clock.Advance(TimeSpan.FromMilliseconds(2));
        await Eventually.UntilAsync(() => acks.PendingCount == 0, "5 was acked on its own");
        await AssertChannelHealthyAsync(channel, queue);

        await channel.CloseAsync();
        Assert.Equal(["m4"], await DrainBodiesAsync(queue, 1));
    }

    [Fact]
    public async Task Reset_ForgetsTheOldChannelsTags()
    {
        var (channel, queue, tags) = await GetUnackedAsync("reset", 2);
        await using var acks = new AckBatcher(channel, batchSize: 100, TimeSpan.FromMilliseconds(2), new FakeTimeProvider(), queue, NullLogger.Instance);
        acks.Received(tags[0], 0);
        acks.Received(tags[1], 0);
        await acks.AckAsync(tags[0], 0, default);

        // A recovered channel numbers its deliveries afresh: an old tag must never be acked on it.
        acks.Reset(1);
        await acks.AckAsync(tags[1], 0, default);
        Assert.Equal(0, acks.PendingCount);
        await acks.FlushAsync();

        await channel.CloseAsync();
        Assert.Equal(["m1", "m2"], await DrainBodiesAsync(queue, 2));
    }

    [Fact]
    public async Task Consumer_StoppedRightAfterHandling_LeavesNothingToRedeliver()
    {
        var transport = await CreateTransportAsync(o => o.AckBatchSize = 64);
        var queue = Name("stop-flush");
        const int count = 300;
        for (var i = 0; i < count; i++)
        {
            await transport.SendAsync(queue, NewEnvelope());
        }

        var handled = 0;
        var consumer = await transport.ConsumeAsync(queue, new ConsumerOptions { Prefetch = 200, MaxConcurrency = 4 }, (_, _) =>
        {
            Interlocked.Increment(ref handled);
            return ValueTask.CompletedTask;
        });
        await Eventually.UntilAsync(() => Volatile.Read(ref handled) == count, "every message handled");
        await consumer.StopAsync();
        await consumer.DisposeAsync();

        var channel = await CreateRawChannelAsync();
        var declared = await channel.QueueDeclarePassiveAsync(queue);
        Assert.Equal(0u, declared.MessageCount);
        Assert.Equal(count, Volatile.Read(ref handled));
    }

    /// <summary>Publishes m1..mN to a fresh queue and gets them all unacked on one channel, in order.</summary>
    private async Task<(IChannel Channel, string Queue, ulong[] Tags)> GetUnackedAsync(string what, int count)
    {
        var queue = Name(what);
        var channel = await CreateRawChannelAsync();
        await channel.QueueDeclareAsync(queue, durable: false, exclusive: false, autoDelete: false);
        for (var i = 1; i <= count; i++)
        {
            await channel.BasicPublishAsync(string.Empty, queue, Encoding.UTF8.GetBytes($"m{i}"));
        }

        var tags = new ulong[count];
        for (var i = 0; i < count; i++)
        {
            var got = await Eventually.ValueAsync(() => new ValueTask<BasicGetResult?>(channel.BasicGetAsync(queue, autoAck: false)), $"message {i + 1} arrived");
            Assert.Equal($"m{i + 1}", Encoding.UTF8.GetString(got.Body.Span));
            tags[i] = got.DeliveryTag;
        }

        return (channel, queue, tags);
    }

    /// <summary>A round trip on the channel: a bad ack would have closed it by the time the reply comes.</summary>
    private static async Task AssertChannelHealthyAsync(IChannel channel, string queue)
    {
        await channel.QueueDeclarePassiveAsync(queue);
        Assert.True(channel.IsOpen, $"channel closed: {channel.CloseReason}");
    }

    /// <summary>Waits until the queue holds the expected number of ready messages (the closed channel's returned), then takes them all.</summary>
    private async Task<string[]> DrainBodiesAsync(string queue, uint expected)
    {
        var channel = await CreateRawChannelAsync();
        await Eventually.UntilAsync(async () => (await channel.QueueDeclarePassiveAsync(queue)).MessageCount >= expected, $"{expected} message(s) are back in the queue");
        var bodies = new List<string>();
        while (await channel.BasicGetAsync(queue, autoAck: true) is { } got)
        {
            bodies.Add(Encoding.UTF8.GetString(got.Body.Span));
        }

        return [.. bodies.Order(StringComparer.Ordinal)];
    }
}
