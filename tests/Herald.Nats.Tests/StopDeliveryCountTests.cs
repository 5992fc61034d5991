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
        var transport = await CreateStopTransportAsync(maxDeliver, loggers);
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

    /// <summary>
    /// Stop 47: messages the pull still held when its consumer stopped (the one it was handing to a full lane, and those the
    /// server had sent that the pull drains after the stop) were nakked at once, while the stopped pull's request, its
    /// batch not yet filled, was still on the server with nobody listening: NATS 2.9 took the nak's redelivery for that
    /// request, rewound the durable, and sent the message again as if new while counting on. Each message must still be
    /// handled once, at attempts that only go up and never past MaxDeliver, and none dead-lettered (none ever failed).
    /// Fewer messages than the consumer pulls, so a request of each stopped pull waits on the server.
    /// </summary>
    [Theory]
    [InlineData(2, 2, 4, 7)]
    [InlineData(3, 2, 4, 7)]
    public async Task MessagesStillInThePullAtEachStop_AreEachHandledOnce_AtAttemptsThatOnlyGoUp_NoneDeadLettered(int maxDeliver, int concurrency, int prefetch, int count)
    {
        var queue = string.Create(CultureInfo.InvariantCulture, $"stop-pulled-{maxDeliver}-{concurrency}-{prefetch}-{count}");
        var log = new TestOutputLogger(LogLevel.Debug);
        using var loggers = LoggerFactory.Create(l => l.AddProvider(log).SetMinimumLevel(LogLevel.Debug));
        var transport = await CreateStopTransportAsync(maxDeliver, loggers);
        var options = ConsumerOptions.Default with { MaxConcurrency = concurrency, Prefetch = prefetch };
        var sent = new HashSet<Guid>();
        for (var i = 0; i < count; i++)
        {
            var envelope = NewEnvelope("m" + i.ToString(CultureInfo.InvariantCulture));
            sent.Add(envelope.MessageId);
            await transport.SendAsync(queue, envelope);
        }

        // Made by the first consumer.
        NATS.Client.JetStream.INatsJSConsumer? durable = null;
        var seen = new ConcurrentQueue<(int Cycle, Guid Id, int Attempt, ulong Sequence)>();
        try
        {
            for (var cycle = 1; cycle <= maxDeliver + 3; cycle++)
            {
                var running = 0;
                var at = cycle;
                var consumer = await transport.ConsumeAsync(queue, options, async (delivery, cancellationToken) =>
                {
                    seen.Enqueue((at, delivery.Envelope.MessageId, delivery.Envelope.DeliveryAttempt, ((NatsDelivery)delivery).StreamSequence));
                    Interlocked.Increment(ref running);
                    await Task.Delay(System.Threading.Timeout.Infinite, cancellationToken);
                });
                await Eventually.UntilAsync(() => Volatile.Read(ref running) == concurrency, $"cycle {at}: every handler running", Timeout);
                var pulled = durable ??= await transport.JetStream.GetConsumerAsync(Names.QueueStream(queue), NatsNames.Durable(queue));

                // Every handler busy, nothing left for the server to send, and a request of the pull waiting: the lanes are
                // full, and the pull holds the rest.
                await Eventually.UntilAsync(
                    async () =>
                    {
                        await pulled.RefreshAsync();
                        return pulled.Info is { NumPending: 0, NumWaiting: > 0 };
                    },
                    () => $"cycle {at}: the pull's request waiting with nothing left to send (pending {pulled.Info.NumPending}, waiting {pulled.Info.NumWaiting})",
                    Timeout);
                await WriteStateAsync(transport, queue, $"cycle {cycle}: before stop");
                await consumer.StopAsync(new CancellationToken(canceled: true));
                await consumer.DisposeAsync();
                await WriteStateAsync(transport, queue, $"cycle {cycle}: after stop");
            }

            var last = durable!;
            var handled = new ConcurrentQueue<(Guid Id, int Attempt)>();
            await using (await transport.ConsumeAsync(queue, options, async (delivery, cancellationToken) =>
            {
                await delivery.AckAsync(cancellationToken);
                handled.Enqueue((delivery.Envelope.MessageId, delivery.Envelope.DeliveryAttempt));
            }))
            {
                // Settled, each handled or (wrongly) dead-lettered through its max-deliveries advisory.
                var deadLettered = new ConcurrentQueue<NativeDeadLetter>();
                await Eventually.UntilAsync(
                    async () =>
                    {
                        await transport.DrainDeadLettersAsync(queue, (letter, _) =>
                        {
                            deadLettered.Enqueue(letter);
                            return ValueTask.CompletedTask;
                        });
                        await last.RefreshAsync();
                        return handled.Count + deadLettered.Count >= count && last.Info is { NumAckPending: 0, NumPending: 0 };
                    },
                    () => $"every message settled (handled {handled.Count}, dead-lettered {deadLettered.Count} of {count}; ack pending {last.Info.NumAckPending}, pending {last.Info.NumPending})",
                    Timeout);
                await WriteStateAsync(transport, queue, "all settled");
                Assert.True(deadLettered.IsEmpty, "dead-lettered though no handler failed: " + string.Join("; ", deadLettered.Select(d => $"{d.Envelope.MessageId}: {d.Reason}")));
                Assert.Equal(sent.Order(), handled.Select(h => h.Id).Order());
                foreach (var (id, attempts) in seen.Select(s => (s.Id, s.Attempt)).Concat(handled).GroupBy(s => s.Id, s => s.Attempt).Select(g => (g.Key, g.ToArray())))
                {
                    for (var i = 1; i < attempts.Length; i++)
                    {
                        Assert.True(attempts[i] > attempts[i - 1] || attempts[i] == maxDeliver, $"message {id}: attempts {string.Join(", ", attempts)} went down");
                    }

                    Assert.All(attempts, a => Assert.InRange(a, 1, maxDeliver));
                }
            }
        }
        finally
        {
            foreach (var s in seen)
            {
                output.WriteLine($"cycle {s.Cycle}: {s.Id} attempt {s.Attempt} seq {s.Sequence}");
            }

            log.WriteTo(output);
        }
    }

    // An ack wait no test outlives: every redelivery comes from a stop's nak or put-back.
    private Task<NatsTransport> CreateStopTransportAsync(int maxDeliver, ILoggerFactory loggers) =>
        CreateTransportAsync(
            o =>
            {
                o.MaxDeliver = maxDeliver;
                o.AckWait = TimeSpan.FromSeconds(30);
            },
            loggerFactory: loggers);

    private async Task WriteStateAsync(NatsTransport transport, string queue, string when)
    {
        var durable = await transport.JetStream.GetConsumerAsync(Names.QueueStream(queue), NatsNames.Durable(queue));
        var stream = await transport.JetStream.GetStreamAsync(Names.QueueStream(queue));
        var info = durable.Info;
        output.WriteLine(
            $"{when}: delivered c{info.Delivered.ConsumerSeq}/s{info.Delivered.StreamSeq}, ackfloor s{info.AckFloor.StreamSeq}, ack pending {info.NumAckPending}, redelivered {info.NumRedelivered}, pending {info.NumPending}, waiting {info.NumWaiting}; stream msgs {stream.Info.State.Messages} first {stream.Info.State.FirstSeq} last {stream.Info.State.LastSeq}");
    }
}
