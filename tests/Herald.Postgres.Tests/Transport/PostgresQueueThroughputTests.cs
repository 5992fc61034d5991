using System.Globalization;
using Herald.Messages;
using Herald.Postgres.Transport;
using Herald.Conformance.Transport;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Postgres.Tests.Transport;

/// <summary>
/// A small throughput harness for the queue (issue 5): prints messages per second with competing consumers, each on its own
/// transport instance (its own pool and LISTEN connection, as separate processes would be). It asserts only that every
/// message was handled once, never a speed. Set HERALD_POSTGRES_BENCH_SCALE (e.g. 10) for a longer, steadier measurement.
/// </summary>
public sealed class PostgresQueueThroughputTests(PostgresSchemaFixture schema, ITestOutputHelper output) : IClassFixture<PostgresSchemaFixture>
{
    private const int Senders = 8;
    private static readonly int Scale =
        int.TryParse(Environment.GetEnvironmentVariable("HERALD_POSTGRES_BENCH_SCALE"), CultureInfo.InvariantCulture, out var scale) && scale > 0 ? scale : 1;

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public async Task Throughput_WithCompetingConsumers_PrintsMessagesPerSecond(int consumerCount)
    {
        var count = 2000 * Scale;
        var queue = "bench-" + Guid.NewGuid().ToString("N");
        var body = new byte[200];
        var transports = new List<ITransport>();
        var consumers = new List<ITransportConsumer>();
        try
        {
            for (var i = 0; i <= consumerCount; i++)
            {
                transports.Add(await PostgresQueueTransportFactory.CreateAsync(PostgresTestDatabase.ConnectionString, o => o.Schema = schema.Schema));
            }

            var sender = transports[0];
            var envelopes = Enumerable.Range(0, count)
                .Select(_ => new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "bench", Time = DateTimeOffset.UtcNow, Body = body })
                .ToList();

            // Sent first, then drained: the consume figure is the consumers' alone.
            var started = TimeProvider.System.GetTimestamp();
            await Task.WhenAll(Enumerable.Range(0, Senders).Select(s => Task.Run(async () =>
            {
                for (var i = s; i < count; i += Senders)
                {
                    await sender.SendAsync(queue, envelopes[i]);
                }
            })));
            var sent = TimeProvider.System.GetElapsedTime(started);

            var handled = new DeliveryCollector();
            started = TimeProvider.System.GetTimestamp();
            for (var i = 1; i <= consumerCount; i++)
            {
                var name = i.ToString(CultureInfo.InvariantCulture);
                consumers.Add(await transports[i].ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 4, Prefetch = 32 }, (d, _) =>
                {
                    handled.Add(d, name);
                    return ValueTask.CompletedTask;
                }));
            }

            await handled.WaitForCountAsync(count, TimeSpan.FromSeconds(120 * Scale), "every message handled");
            var consumed = TimeProvider.System.GetElapsedTime(started);

            output.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"{count} messages of {body.Length} B: sent by {Senders} senders at {count / sent.TotalSeconds:0} msg/s; " +
                $"consumed (claim, handle, ack) by {consumerCount} competing consumer(s), MaxConcurrency 4 each, at {count / consumed.TotalSeconds:0} msg/s " +
                $"(per consumer: {string.Join(", ", handled.Items.GroupBy(d => d.Consumer).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => g.Count()))})"));
            Assert.Equal(count, handled.Items.Select(d => d.Envelope.MessageId).Distinct().Count());
        }
        finally
        {
            foreach (var consumer in consumers)
            {
                await consumer.DisposeAsync();
            }

            foreach (var transport in transports)
            {
                await transport.DisposeAsync();
            }
        }
    }
}
