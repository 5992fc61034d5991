using System.Collections.Concurrent;
using System.Globalization;
using Herald.Conformance;
using Herald.Nats.Transport;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.Nats.Tests;

/// <summary>
/// Stop 46: the delivery count each consumer of a durable sees after the one before it stopped (cancelled at once) while
/// its handler ran a message of the queue's own stream, against the server's own count.
/// </summary>
public sealed class StopDeliveryCountTests(ITestOutputHelper output) : NatsTestBase
{
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public async Task EachConsumerAfterAStop_SeesTheServersDeliveryCount_AndTheMessageIsHandledNotDeadLettered(int maxDeliver)
    {
        var queue = "stop-count-" + maxDeliver.ToString(CultureInfo.InvariantCulture);
        var log = new TestOutputLogger(LogLevel.Debug);
        using var loggers = LoggerFactory.Create(l => l.AddProvider(log).SetMinimumLevel(LogLevel.Debug));
        var transport = await CreateTransportAsync(
            o =>
            {
                o.MaxDeliver = maxDeliver;
                o.AckWait = TimeSpan.FromSeconds(30);
            },
            loggerFactory: loggers);
        var options = ConsumerOptions.Default with { MaxConcurrency = 1, Prefetch = 4 };
        var held = NewEnvelope("held");
        await transport.SendAsync(queue, held);
        var seen = new List<(int Attempt, ulong Sequence)>();
        try
        {
            for (var cycle = 1; cycle <= maxDeliver + 2; cycle++)
            {
                var running = new TaskCompletionSource<(int, ulong)>(TaskCreationOptions.RunContinuationsAsynchronously);
                var consumer = await transport.ConsumeAsync(queue, options, async (delivery, cancellationToken) =>
                {
                    running.TrySetResult((delivery.Envelope.DeliveryAttempt, ((NatsDelivery)delivery).StreamSequence));
                    await Task.Delay(System.Threading.Timeout.Infinite, cancellationToken);
                });
                var got = await running.Task.WaitAsync(Timeout);
                seen.Add(got);
                await consumer.StopAsync(new CancellationToken(canceled: true));
                await consumer.DisposeAsync();
                await WriteStateAsync(transport, queue, $"cycle {cycle} saw attempt {got.Item1} seq {got.Item2}; after stop");
            }

            // The last consumer handles it, on the last attempt.
            var handled = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
            await using (await transport.ConsumeAsync(queue, options, async (delivery, cancellationToken) =>
            {
                await delivery.AckAsync(cancellationToken);
                handled.TrySetResult(delivery.Envelope.DeliveryAttempt);
            }))
            {
                var attempt = await handled.Task.WaitAsync(Timeout);
                await WriteStateAsync(transport, queue, $"handled at attempt {attempt}");
                var expected = Enumerable.Range(1, maxDeliver).Concat(Enumerable.Repeat(maxDeliver, 2)).ToArray();
                Assert.Equal(expected, seen.Select(s => s.Attempt).ToArray());
                Assert.Equal(maxDeliver, attempt);
                Assert.Equal(0, await transport.DrainDeadLettersAsync(queue, (_, _) => throw new InvalidOperationException("dead-lettered though never failed")));
            }
        }
        finally
        {
            output.WriteLine(string.Join(", ", seen));
            log.WriteTo(output);
        }
    }

    private async Task WriteStateAsync(NatsTransport transport, string queue, string when)
    {
        var durable = await transport.JetStream.GetConsumerAsync(Names.QueueStream(queue), NatsNames.Durable(queue));
        var stream = await transport.JetStream.GetStreamAsync(Names.QueueStream(queue));
        var info = durable.Info;
        output.WriteLine(
            $"{when}: delivered c{info.Delivered.ConsumerSeq}/s{info.Delivered.StreamSeq}, ackfloor s{info.AckFloor.StreamSeq}, ack pending {info.NumAckPending}, redelivered {info.NumRedelivered}, pending {info.NumPending}, waiting {info.NumWaiting}; stream msgs {stream.Info.State.Messages} first {stream.Info.State.FirstSeq} last {stream.Info.State.LastSeq}");
    }
}
