using System.Diagnostics.Metrics;
using Herald.Diagnostics;

namespace Herald.Kafka.Diagnostics;

/// <summary>
/// The retry relay's counter, <c>herald.kafka.relay.failed</c> on Herald's meter: each relay of a due retry-topic record
/// that failed and is tried again after a back-off (the record stays in the retry topic), tagged with the target topic, the
/// retry topic and the error's type. A rate above zero for long means records are held: the cluster, or a missing topic.
/// </summary>
internal static class KafkaRelayMetrics
{
    /// <summary>The counter's name.</summary>
    public const string FailedName = "herald.kafka.relay.failed";

    private static readonly Counter<long> Failed =
        HeraldDiagnostics.Meter.CreateCounter<long>(FailedName, "{record}", "Relays of a due retry-topic record that failed and are tried again after a back-off.");

    public static void CountFailure(string retryTopic, string target, Exception failure) =>
        Failed.Add(
            1,
            new KeyValuePair<string, object?>(MetricNames.DestinationTag, target),
            new KeyValuePair<string, object?>("herald.kafka.retry_topic", retryTopic),
            new KeyValuePair<string, object?>("error.type", failure.GetType().Name));
}
