using Herald.Conformance;
using Herald.RabbitMQ.Diagnostics;
using Herald.RabbitMQ.Transport;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// The queue gauges (issue 13, item 5) against the real broker: ready and unacked from the management API, and the ready
/// count alone, logged once, when the API cannot be reached.
/// </summary>
public sealed class QueueGaugeTests(ITestOutputHelper output) : RabbitMqTestBase
{
    // The management API refreshes queue statistics about every 5 s; a few rounds of that on a loaded machine.
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Gauges_ReportReadyAndUnackedOfAConsumedQueue_FromTheManagementApi()
    {
        var transport = await CreateTransportAsync(o => o.GaugeRefreshInterval = TimeSpan.FromMilliseconds(200));
        var queue = Name("gauge");
        for (var i = 0; i < 10; i++)
        {
            await transport.SendAsync(queue, NewEnvelope());
        }

        // Three handlers hold their message (prefetch three), so three are unacked and seven ready.
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = 0;
        await ConsumeAsync(transport, queue, async (_, ct) =>
        {
            Interlocked.Increment(ref held);
            await release.Task.WaitAsync(ct);
        }, new ConsumerOptions { MaxConcurrency = 3, Prefetch = 3 });

        using var gauge = new GaugeReader(RabbitMqQueueGauges.Messages, RabbitMqQueueGauges.StateTag, queue);
        try
        {
            await Eventually.UntilAsync(
                () => gauge.Read() is { } m && m.GetValueOrDefault("ready") == 7 && m.GetValueOrDefault("unacked") == 3,
                "the gauge shows 7 ready and 3 unacked",
                Deadline);
        }
        finally
        {
            output.WriteLine($"last gauge read: {gauge}; handlers holding a message: {Volatile.Read(ref held)}");
            release.TrySetResult();
        }

        // Released, everything is handled and acked: both counts fall to zero.
        await Eventually.UntilAsync(
            () => gauge.Read() is { } m && m.GetValueOrDefault("ready", -1) == 0 && m.GetValueOrDefault("unacked", -1) == 0,
            "the gauge shows the queue drained",
            Deadline);
    }

    [Fact]
    public async Task Gauges_FallBackToThePassiveDeclaresReadyCount_AndLogItOnce_WhenTheManagementApiIsUnreachable()
    {
        var logs = new TestOutputLogger(LogLevel.Warning);
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(logs));
        var queue = Name("gauge-fallback");
        var logged = logs.WhenLoggedAsync("management API");
        var transport = await RabbitMqTransportFactory.CreateAsync(
            new RabbitMqTransportOptions
            {
                ConnectionUri = BrokerAdmin.AmqpUri,
                ClientProvidedName = Prefix,
                // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
                ManagementUri = new Uri("http://127.0.0.1:9/"),
                GaugeRefreshInterval = TimeSpan.FromMilliseconds(100),
            },
            loggerFactory: loggerFactory);
        await using var _ = transport;
        for (var i = 0; i < 4; i++)
        {
            await transport.SendAsync(queue, NewEnvelope());
        }

        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using (var consumer = await transport.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 1, Prefetch = 1 }, async (_, ct) => await release.Task.WaitAsync(ct)))
        {
            using var gauge = new GaugeReader(RabbitMqQueueGauges.Messages, RabbitMqQueueGauges.StateTag, queue);
            await Eventually.UntilAsync(() => gauge.Read() is { } m && m.GetValueOrDefault("ready") == 3, "the gauge shows 3 ready", Deadline);

            // Several more reads, each falling back again.
            for (var reads = 0; reads < 3; reads++)
            {
                var before = RabbitMqQueueGauges.Last((RabbitMqTransport)transport, queue);
                await Eventually.UntilAsync(() => gauge.Read() is not null && !ReferenceEquals(RabbitMqQueueGauges.Last((RabbitMqTransport)transport, queue), before), "the gauge reads the queue again", Deadline);
            }

            Assert.DoesNotContain("unacked", gauge.Read()!.Keys);
            Assert.Null(RabbitMqQueueGauges.Last((RabbitMqTransport)transport, queue)!.Unacked);
            release.TrySetResult();
        }

        await logged.WaitAsync(Deadline);
        var lines = new LineCollector();
        logs.WriteTo(lines);
        var warning = Assert.Single(lines.Lines, l => l.Contains("management API", StringComparison.Ordinal));
        Assert.Contains("127.0.0.1:9", warning, StringComparison.Ordinal);
        logs.WriteTo(output);
    }

    [Fact]
    public void ManagementUri_DefaultsToTheAmqpHostOnTheManagementPort_AndIsValidated()
    {
        Assert.Equal(new Uri("http://rabbit.local:15672/"), RabbitMqQueueCounter.ManagementUri(new RabbitMqTransportOptions { ConnectionUri = new Uri("amqp://u:p@rabbit.local:5672/orders") }));
        Assert.Equal(new Uri("https://rabbit.local:15671/"), RabbitMqQueueCounter.ManagementUri(new RabbitMqTransportOptions { ConnectionUri = new Uri("amqps://u:p@rabbit.local/") }));
        var set = new Uri("http://monitor:secret@stats.local:8080/rabbit/");
        Assert.Equal(set, RabbitMqQueueCounter.ManagementUri(new RabbitMqTransportOptions { ConnectionUri = new Uri("amqp://u:p@rabbit.local/"), ManagementUri = set }));

        var errors = new RabbitMqTransportOptions { ConnectionUri = new Uri("amqp://u:p@rabbit.local/"), ManagementUri = new Uri("ftp://x:secret@rabbit.local/"), GaugeRefreshInterval = TimeSpan.Zero }.Validate();
        Assert.Contains(errors, e => e.Contains("ManagementUri", StringComparison.Ordinal) && !e.Contains("secret", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("GaugeRefreshInterval", StringComparison.Ordinal));
    }

    private sealed class LineCollector : ITestOutputHelper
    {
        public List<string> Lines { get; } = [];

        public void WriteLine(string message) => Lines.Add(message);

        public void WriteLine(string format, params object[] args) => Lines.Add(string.Format(System.Globalization.CultureInfo.InvariantCulture, format, args));
    }
}
