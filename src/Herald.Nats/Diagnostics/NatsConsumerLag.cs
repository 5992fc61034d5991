using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Herald.Diagnostics;

namespace Herald.Nats.Diagnostics;

/// <summary>
/// The consumer lag gauges: for every running consumer of this process, its pending, ack-pending and delayed counts as last read
/// from the server (each consumer refreshes them on a timer; an observable gauge's callback must not do I/O), tagged
/// with the queue, the stream and the durable consumer. Consumers of one queue in one process report the same numbers.
/// </summary>
internal static class NatsConsumerLag
{
    private static readonly ConcurrentDictionary<ILagSource, byte> Sources = new();

    private static readonly ObservableGauge<long>[] Gauges =
    [
        HeraldDiagnostics.Meter.CreateObservableGauge(NatsMetricNames.ConsumerPending, () => Observe(static s => s.Pending), "{message}", "Messages of the stream not yet delivered to the queue's JetStream consumer."),
        HeraldDiagnostics.Meter.CreateObservableGauge(NatsMetricNames.ConsumerAckPending, () => Observe(static s => s.AckPending), "{message}", "Messages delivered to the queue's JetStream consumer and not yet acked."),
        HeraldDiagnostics.Meter.CreateObservableGauge(NatsMetricNames.ConsumerDelayed, () => Observe(static s => s.Delayed), "{message}", "Delayed messages of the queue not yet due, waiting in its delay stream."),
    ];

    public static void Track(ILagSource source) => Sources[source] = (byte)Gauges.Length;

    public static void Untrack(ILagSource source) => Sources.TryRemove(source, out _);

    private static IEnumerable<Measurement<long>> Observe(Func<ILagSource, long> read)
    {
        foreach (var source in Sources.Keys)
        {
            if (source.HasLag)
            {
                yield return new Measurement<long>(read(source), source.Tags);
            }
        }
    }
}

/// <summary>A consumer whose lag the gauges report.</summary>
internal interface ILagSource
{
    /// <summary>False until the first read from the server.</summary>
    bool HasLag { get; }

    long Pending { get; }

    long AckPending { get; }

    long Delayed { get; }

    KeyValuePair<string, object?>[] Tags { get; }
}
