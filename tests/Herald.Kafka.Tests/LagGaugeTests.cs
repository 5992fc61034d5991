using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Herald.Conformance;
using Herald.Diagnostics;
using Herald.Kafka.Diagnostics;
using Herald.Kafka.Transport;
using Herald.Transport;

namespace Herald.Kafka.Tests;

public sealed class LagGaugeTests : KafkaTestBase
{
    [Fact]
    public async Task LagGauge_ShowsPerPartitionLag_WhileHandlersHoldBack_AndFallsToZeroOnceCommitted()
    {
        var queue = Name("lag");
        var transport = await CreateTransportAsync();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handled = 0;
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (_, ct) =>
        {
            await release.Task.WaitAsync(TimeSpan.FromSeconds(30), ct);
            Interlocked.Increment(ref handled);
        }));
        for (var i = 0; i < 6; i++)
        {
            await transport.SendAsync(queue, NewEnvelope("one-key"));
        }

        using var listener = new MeterListener();
        var measured = new ConcurrentDictionary<(string Topic, string Partition), long>();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == HeraldDiagnostics.Name && instrument.Name == KafkaLag.MetricName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            var topic = tags.ToArray().Single(t => t.Key == MetricNames.DestinationTag).Value as string;
            var partition = tags.ToArray().Single(t => t.Key == "messaging.destination.partition.id").Value as string;
            if (topic == queue)
            {
                measured[(topic!, partition!)] = value;
            }
        });
        listener.Start();

        // One key, one partition: all six wait behind the first, so that partition lags by six.
        await Eventually.UntilAsync(() => { listener.RecordObservableInstruments(); return measured.Values.Sum() == 6; }, "a lag of six on the key's partition", TimeSpan.FromSeconds(30));
        Assert.Single(measured, m => m.Value == 6);

        release.TrySetResult();
        await Eventually.UntilAsync(() => Volatile.Read(ref handled) == 6, "every message handled", TimeSpan.FromSeconds(30));
        await Eventually.UntilAsync(() => { listener.RecordObservableInstruments(); return measured.Values.Sum() == 0; }, "no lag once committed", TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task LagGauge_OfAConsumerStartedAtTheEnd_CountsOnlyWhatCameAfterItsStart()
    {
        // Before its first commit the gauge counted from the log's start: the backlog Latest skips showed as lag.
        var queue = Name("lag-latest");
        var sender = await CreateTransportAsync();
        for (var i = 0; i < 5; i++)
        {
            await sender.SendAsync(queue, NewEnvelope("one-key"));
        }

        var transport = await CreateTransportAsync(o => o.StartPosition = KafkaStartPosition.Latest);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumer = (KafkaConsumer)Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (_, ct) =>
        {
            started.TrySetResult();
            await release.Task.WaitAsync(ct);
        }));

        // One record after the start, held by its handler (so nothing is committed): the one message that lags.
        await sender.SendAsync(queue, NewEnvelope("one-key"));
        await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await Eventually.UntilAsync(() => consumer.Lag().Sum(l => l.Lag) == 1, "a lag of the one record sent after the start", TimeSpan.FromSeconds(10));

        release.SetResult();
        await Eventually.UntilAsync(() => consumer.Lag().Sum(l => l.Lag) == 0, "no lag once it is committed", TimeSpan.FromSeconds(10));
    }
}
