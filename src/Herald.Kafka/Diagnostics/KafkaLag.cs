using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Herald.Diagnostics;
using Herald.Kafka.Transport;

namespace Herald.Kafka.Diagnostics;

/// <summary>
/// The per-partition consumer lag gauge, <c>herald.kafka.consumer.lag</c> on Herald's meter: for every partition a
/// running consumer holds, the log end offset minus the group's committed offset, tagged with the topic, partition and
/// group. Observed from what the consumers last saw (refreshed about every second), so a scrape never waits on the cluster.
/// </summary>
internal static class KafkaLag
{
    /// <summary>The gauge's name.</summary>
    public const string MetricName = "herald.kafka.consumer.lag";

    private static readonly ConcurrentDictionary<KafkaConsumer, byte> Consumers = new();

    private static readonly ObservableGauge<long> Gauge =
        HeraldDiagnostics.Meter.CreateObservableGauge(MetricName, Observe, "{message}", "Records of a partition not yet committed by the consumer group (log end offset minus committed offset).");

    public static void Register(KafkaConsumer consumer)
    {
        // Touching the gauge creates it (static fields initialise lazily), so a listener sees it from the first consumer on.
        _ = Gauge;
        Consumers[consumer] = 0;
    }

    public static void Unregister(KafkaConsumer consumer) => Consumers.TryRemove(consumer, out _);

    private static IEnumerable<Measurement<long>> Observe()
    {
        foreach (var consumer in Consumers.Keys)
        {
            foreach (var (partition, lag) in consumer.Lag())
            {
                yield return new Measurement<long>(
                    lag,
                    new KeyValuePair<string, object?>(MetricNames.DestinationTag, partition.Topic),
                    new KeyValuePair<string, object?>("messaging.destination.partition.id", partition.Partition.Value.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                    new KeyValuePair<string, object?>("messaging.consumer.group.name", consumer.GroupId));
            }
        }
    }
}
