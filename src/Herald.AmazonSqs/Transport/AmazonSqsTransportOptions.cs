using Amazon.Runtime;
using Amazon.SQS;
using Herald.Internal;

namespace Herald.AmazonSqs.Transport;

/// <summary>Settings of the Amazon SQS transport, validated when the transport is created (or at host start).</summary>
public sealed class AmazonSqsTransportOptions
{
    /// <summary>The longest long poll SQS allows.</summary>
    internal static readonly TimeSpan MaxWaitTime = TimeSpan.FromSeconds(20);

    /// <summary>The longest visibility timeout SQS allows.</summary>
    internal static readonly TimeSpan MaxVisibility = TimeSpan.FromHours(12);

    /// <summary>
    /// The SDK client's settings: the region (<c>RegionEndpoint</c>), or <c>ServiceURL</c> for an emulator such as
    /// <c>http://127.0.0.1:9324</c>. Ignored when <see cref="Client"/> is set.
    /// </summary>
    public AmazonSQSConfig ClientConfig { get; } = new();

    /// <summary>The credentials to sign requests with; null takes the SDK's default chain (environment, profile, instance role).</summary>
    public AWSCredentials? Credentials { get; set; }

    /// <summary>A client made by the application (shared, or configured beyond <see cref="ClientConfig"/>); Herald uses it and never disposes it.</summary>
    public IAmazonSQS? Client { get; set; }

    /// <summary>Put in front of every SQS queue name Herald uses (an environment, say <c>staging-</c>), so several share an account.</summary>
    public string QueueNamePrefix { get; set; } = "";

    /// <summary>
    /// Whether every queue is a FIFO queue (its SQS name gets <c>.fifo</c>): the partition key becomes the message group, so
    /// messages of one key are handled one at a time in send order, and the message id the deduplication id.
    /// </summary>
    public bool FifoQueues { get; set; }

    /// <summary>How long a received message stays hidden from other consumers; renewed every third of it while its handler runs.</summary>
    public TimeSpan VisibilityTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long one receive waits for messages (long polling, at most 20 s, in whole seconds rounded up); zero: short polls every half second.</summary>
    public TimeSpan WaitTime { get; set; } = MaxWaitTime;

    /// <summary>
    /// The redrive policy's <c>maxReceiveCount</c> set on every queue Herald creates: a message received this often without
    /// being settled (its consumer crashed each time) moves to the queue's dead-letter queue, which Herald drains into its
    /// dead-letter store. Null: no redrive policy. Keep it above the retry policy's attempts, which settle before it.
    /// </summary>
    public int? MaxReceiveCount { get; set; } = 10;

    /// <summary>Largest body accepted, in bytes; larger messages are refused before sending. The default leaves room for base64 and attributes within SQS's 256 KiB.</summary>
    public int MaxMessageBytes { get; set; } = 160 * 1024;

    /// <summary>Whether Herald creates queues, dead-letter queues and topic registries as it uses them (off when an operator owns them).</summary>
    public bool DeclareTopology { get; set; } = true;

    /// <summary>The CloudEvents <c>source</c> written when a message carries no <c>herald-source</c> header.</summary>
    public string Source { get; set; } = "/herald";

    /// <summary>Name of a queue's dead-letter queue (before the prefix and the FIFO suffix). Default <c>{queue}-dead-letter</c>.</summary>
    public Func<string, string> DeadLetterQueueName { get; set; } = static queue => $"{queue}-dead-letter";

    /// <summary>
    /// Name of the queue whose tags list a topic's bound queues (SQS has no topics; the package uses no SNS). It holds no
    /// messages. Default <c>{topic}-topic</c>.
    /// </summary>
    public Func<string, string> TopicQueueName { get; set; } = static topic => $"{topic}-topic";

    /// <summary>
    /// How long a publisher trusts the bound queues it read for a topic before reading them again (bindings made in this
    /// process apply at once); <see cref="TimeSpan.MaxValue"/> reads them once (it is only compared with their age).
    /// </summary>
    public TimeSpan BindingCacheDuration { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How often the queue gauges (<c>herald.sqs.messages</c>) read a consumed queue's approximate counts, at most;
    /// <see cref="TimeSpan.MaxValue"/> reads them once (it is only compared with their age, never waited on).
    /// </summary>
    public TimeSpan GaugeRefreshInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// Queues that also take plain JSON messages from other clients (no <c>ce_type</c> attribute), keyed by queue name, with the
    /// Herald message type to give them: <c>RawQueues["orders-in"] = "order-placed"</c>.
    /// </summary>
    public IDictionary<string, string> RawQueues { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Adds every problem of the settings to <paramref name="problems"/>.</summary>
    internal void Check(OptionsProblems problems)
    {
        problems.Between(nameof(VisibilityTimeout), VisibilityTimeout, TimeSpan.FromSeconds(3), MaxVisibility, "3 seconds and 12 hours");
        problems.Between(nameof(WaitTime), WaitTime, TimeSpan.Zero, MaxWaitTime, "zero and 20 seconds");
        if (MaxReceiveCount is { } count)
        {
            problems.Between(nameof(MaxReceiveCount), count, 1, 1000);
        }

        problems.Between(nameof(MaxMessageBytes), MaxMessageBytes, 1, 1024 * 1024);
        problems.Positive(nameof(BindingCacheDuration), BindingCacheDuration);
        problems.Positive(nameof(GaugeRefreshInterval), GaugeRefreshInterval);
        if (string.IsNullOrWhiteSpace(Source))
        {
            problems.Add(nameof(Source), "must not be empty.");
        }

        if (QueueNamePrefix is null || !AmazonSqsNames.IsValidPart(QueueNamePrefix))
        {
            problems.Add(nameof(QueueNamePrefix), $"is '{QueueNamePrefix}'; it may hold only letters, digits, '-' and '_'.");
        }

        if (DeadLetterQueueName is null || TopicQueueName is null)
        {
            problems.Add(nameof(DeadLetterQueueName), "and TopicQueueName must be set.");
        }

        if (Client is null && ClientConfig.ServiceURL is null && ClientConfig.RegionEndpoint is null)
        {
            problems.Add(nameof(ClientConfig), "names no region and no ServiceURL: set ClientConfig.RegionEndpoint (or ServiceURL for an emulator), or give a Client.");
        }

        foreach (var (queue, type) in RawQueues)
        {
            if (string.IsNullOrWhiteSpace(queue) || string.IsNullOrWhiteSpace(type))
            {
                problems.Add(nameof(RawQueues), $"entry '{queue}' = '{type}' needs a queue name and a message type.");
            }
        }
    }
}
