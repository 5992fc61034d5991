using Amazon.SQS;
using Amazon.SQS.Model;
using Herald.AmazonSqs.Transport;
using Herald.Internal;

namespace Herald.AmazonSqs.Diagnostics;

/// <summary>
/// The observable gauge <c>herald.sqs.messages</c> on Herald's meter: the approximate number of messages of each queue this
/// process consumes, tagged with the queue and the state (<c>visible</c>: waiting, <c>in_flight</c>: received and not yet
/// deleted, <c>delayed</c>: not yet visible). A collection reports the counts last read and, when they are older than the
/// transport's <see cref="AmazonSqsTransportOptions.GaugeRefreshInterval"/>, starts one <c>GetQueueAttributes</c> call in
/// the background: a collection never waits on SQS.
/// </summary>
internal static class SqsQueueGauges
{
    /// <summary>The gauge's name.</summary>
    public const string Messages = "herald.sqs.messages";

    /// <summary>Tag: which count, <c>visible</c>, <c>in_flight</c> or <c>delayed</c>.</summary>
    public const string StateTag = "herald.sqs.state";

    private static readonly List<string> CountNames =
    [
        QueueAttributeName.ApproximateNumberOfMessages,
        QueueAttributeName.ApproximateNumberOfMessagesNotVisible,
        QueueAttributeName.ApproximateNumberOfMessagesDelayed,
    ];

    private static readonly QueueCountGauge<AmazonSqsTransport, SqsQueueCounts> Gauge = new(
        Messages, StateTag, "Approximate messages of a consumed SQS queue, by state (visible, in_flight, delayed).", States);

    /// <summary>Starts reporting the counts of a queue the transport consumes.</summary>
    public static void Watch(AmazonSqsTransport transport, string queue, string queueUrl) =>
        Gauge.Watch(
            transport,
            queue,
            transport.TimeProvider,
            transport.Options.GaugeRefreshInterval,
            () => ReadAsync(transport, queueUrl),
            transport.Logger);

    /// <summary>Stops reporting the transport's queues (it is disposed).</summary>
    public static void Forget(AmazonSqsTransport transport) => Gauge.Forget(transport);

    /// <summary>The counts last read for a watched queue (tests); null when it is not watched or was never read.</summary>
    internal static SqsQueueCounts? Last(AmazonSqsTransport transport, string queue) => Gauge.Last(transport, queue);

    private static async Task<SqsQueueCounts?> ReadAsync(AmazonSqsTransport transport, string queueUrl)
    {
        var response = await transport.Client.GetQueueAttributesAsync(new GetQueueAttributesRequest { QueueUrl = queueUrl, AttributeNames = CountNames }).ConfigureAwait(false);
        return new SqsQueueCounts(response.ApproximateNumberOfMessages, response.ApproximateNumberOfMessagesNotVisible, response.ApproximateNumberOfMessagesDelayed);
    }

    private static IEnumerable<(string State, long Value)> States(SqsQueueCounts counts)
    {
        yield return ("visible", counts.Visible);
        yield return ("in_flight", counts.InFlight);
        yield return ("delayed", counts.Delayed);
    }
}

/// <summary>A queue's approximate counts: visible (waiting), in flight (received, not yet deleted) and delayed.</summary>
internal sealed record SqsQueueCounts(long Visible, long InFlight, long Delayed);
