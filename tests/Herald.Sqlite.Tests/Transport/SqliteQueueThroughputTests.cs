using System.Globalization;
using System.Text;
using Herald.Messages;
using Herald.Sqlite.Transport;
using Herald.Conformance.Transport;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>
/// A small throughput harness for the queue: prints messages per second sent and consumed (8 concurrent senders, the
/// consumers running meanwhile), with 1 and 4 consumers. It asserts only that every message was handled, never a speed.
/// Set HERALD_SQLITE_BENCH_SCALE (e.g. 10) for a longer, steadier measurement.
/// </summary>
public sealed class SqliteQueueThroughputTests(ITestOutputHelper output)
{
    private const int Senders = 8;
    private static readonly int Scale = int.TryParse(Environment.GetEnvironmentVariable("HERALD_SQLITE_BENCH_SCALE"), CultureInfo.InvariantCulture, out var scale) && scale > 0 ? scale : 1;

    [Theory]
    [InlineData(1, SqliteSynchronousMode.Full)]
    [InlineData(4, SqliteSynchronousMode.Full)]
    [InlineData(1, SqliteSynchronousMode.Normal)]
    [InlineData(4, SqliteSynchronousMode.Normal)]
    public async Task Throughput_SendAndConsume_PrintsMessagesPerSecond(int consumerCount, SqliteSynchronousMode synchronous)
    {
        using var database = new TempDatabase();
        await using var transport = await SqliteQueueTransportFactory.OpenAsync(database.Path, o => o.Synchronous = synchronous);
        var count = 2000 * Scale;
        var body = new byte[200];
        var handled = new DeliveryCollector();
        var consumers = new List<ITransportConsumer>();
        for (var i = 0; i < consumerCount; i++)
        {
            consumers.Add(await transport.ConsumeAsync("bench", ConsumerOptions.Default, (d, _) =>
            {
                handled.Add(d);
                return ValueTask.CompletedTask;
            }));
        }

        try
        {
            var started = TimeProvider.System.GetTimestamp();
            await Task.WhenAll(Enumerable.Range(0, Senders).Select(s => Task.Run(async () =>
            {
                for (var i = s; i < count; i += Senders)
                {
                    await transport.SendAsync("bench", new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "bench", Time = DateTimeOffset.UtcNow, Body = body });
                }
            })));
            var sent = TimeProvider.System.GetElapsedTime(started);
            await handled.WaitForCountAsync(count, TimeSpan.FromSeconds(60 * Scale), "every message handled");
            var elapsed = TimeProvider.System.GetElapsedTime(started);

            var line = new StringBuilder()
                .Append(CultureInfo.InvariantCulture, $"{count} messages, {Senders} senders, {consumerCount} consumer(s), synchronous {synchronous}: ")
                .Append(CultureInfo.InvariantCulture, $"sent in {sent.TotalMilliseconds:0} ms, sent+consumed in {elapsed.TotalMilliseconds:0} ms = {count / elapsed.TotalSeconds:0} msg/s");
            output.WriteLine(line.ToString());
            Assert.Equal(count, handled.Items.Select(d => d.Envelope.MessageId).Distinct().Count());
        }
        finally
        {
            foreach (var consumer in consumers)
            {
                await consumer.DisposeAsync();
            }
        }
    }
}
