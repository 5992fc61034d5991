using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Amazon.SQS;
using Amazon.SQS.Model;
using Herald.AmazonSqs.Transport;
using Herald.Diagnostics;

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

    private static readonly ConcurrentDictionary<(AmazonSqsTransport Transport, string Queue), Watched> Queues = new();

    static SqsQueueGauges()
    {
        HeraldDiagnostics.Meter.CreateObservableGauge(Messages, Observe, "{message}", "Approximate messages of a consumed SQS queue, by state (visible, in_flight, delayed).");
    }

    /// <summary>Starts reporting the counts of a queue the transport consumes.</summary>
    public static void Watch(AmazonSqsTransport transport, string queue, string queueUrl) =>
        Queues.TryAdd((transport, queue), new Watched(transport, queue, queueUrl));

    /// <summary>Stops reporting the transport's queues (it is disposed).</summary>
    public static void Forget(AmazonSqsTransport transport)
    {
        foreach (var key in Queues.Keys)
        {
            if (ReferenceEquals(key.Transport, transport))
            {
                Queues.TryRemove(key, out _);
            }
        }
    }

    /// <summary>The counts last read for a watched queue (tests); null when it is not watched or was never read.</summary>
    internal static (long Visible, long InFlight, long Delayed)? Last(AmazonSqsTransport transport, string queue) =>
        Queues.TryGetValue((transport, queue), out var watched) ? watched.Counts : null;

    private static IEnumerable<Measurement<long>> Observe()
    {
        foreach (var watched in Queues.Values)
        {
            watched.RefreshIfStale();
            if (watched.Counts is { } counts)
            {
                yield return Measure(counts.Visible, watched.Queue, "visible");
                yield return Measure(counts.InFlight, watched.Queue, "in_flight");
                yield return Measure(counts.Delayed, watched.Queue, "delayed");
            }
        }
    }

    private static Measurement<long> Measure(long value, string queue, string state) =>
        new(value, new KeyValuePair<string, object?>(MetricNames.DestinationTag, queue), new KeyValuePair<string, object?>(StateTag, state));

    /// <summary>One consumed queue and its counts as last read.</summary>
    private sealed class Watched(AmazonSqsTransport transport, string queue, string queueUrl)
    {
        private int _refreshing;
        private DateTimeOffset _readAt = DateTimeOffset.MinValue;

        public string Queue => queue;

        public (long Visible, long InFlight, long Delayed)? Counts { get; private set; }

        public void RefreshIfStale()
        {
            if (transport.Now() - _readAt < transport.Options.GaugeRefreshInterval || Interlocked.Exchange(ref _refreshing, 1) != 0)
            {
                return;
            }

            _ = RefreshAsync();
        }

        /// <summary>Reads the counts now (the gauge's background read, and tests).</summary>
        public async Task RefreshAsync()
        {
            try
            {
                var response = await transport.Client.GetQueueAttributesAsync(new GetQueueAttributesRequest { QueueUrl = queueUrl, AttributeNames = CountNames }).ConfigureAwait(false);
                Counts = (response.ApproximateNumberOfMessages, response.ApproximateNumberOfMessagesNotVisible, response.ApproximateNumberOfMessagesDelayed);
                _readAt = transport.Now();
            }
#pragma warning disable CA1031 // A gauge read runs in the background with nobody to report to: logged, and the last counts stay.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Log.GaugeReadFailed(transport.Logger, ex, queue);
            }
            finally
            {
                Interlocked.Exchange(ref _refreshing, 0);
            }
        }
    }
}
