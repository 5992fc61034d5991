using Herald.Internal;

namespace Herald.RabbitMQ.Transport;

/// <summary>Settings of the RabbitMQ transport, validated when the transport is created (or at host start).</summary>
public sealed class RabbitMqTransportOptions
{
    /// <summary>
    /// The broker to connect to, with the user and password to connect as, such as <c>amqp://herald:secret@127.0.0.1:5672/</c>
    /// (the path is the virtual host). The default names no user: Herald has no default credentials, so set them.
    /// </summary>
    public Uri ConnectionUri { get; set; } = new("amqp://localhost:5672/");

    /// <summary>The name this process's connections show in the management UI (suffixed with <c>:publish</c> and <c>:consume</c>).</summary>
    public string ClientProvidedName { get; set; } = "herald";

    /// <summary>The kind of queue declared for queues, retry queues and dead-letter queues.</summary>
    public RabbitMqQueueType QueueType { get; set; } = RabbitMqQueueType.Classic;

    /// <summary>
    /// On quorum queues, how often a message may be delivered without being settled (its handler cut off, its process
    /// stopped or crashed) before its next delivery is dead-lettered instead of handled, by the broker's count; null: no limit.
    /// </summary>
    // Below RabbitMQ 4's own default delivery-limit of 20 ("Messages that are redelivered 20 times or more will be
    // dead-lettered or dropped", 4.0 release notes): Herald's queues have no dead-letter exchange, so the broker would drop it.
    public int? MaxDeliveries { get; set; } = 10;

    /// <summary>When set, replaces <c>ConsumerOptions.Prefetch</c> for every consumer (raised to the consumer's concurrency if lower).</summary>
    public int? Prefetch { get; set; }

    /// <summary>
    /// Whether a send completes only once the broker confirmed it (on by default; off trades safety for throughput).
    /// Retry and dead-letter copies are confirmed either way, since their original is acked once they are published.
    /// </summary>
    public bool PublisherConfirms { get; set; } = true;

    /// <summary>Largest body accepted, in bytes; larger messages are refused before sending. 16 MiB, the RabbitMQ 4 default limit.</summary>
    public int MaxMessageBytes { get; set; } = 16 * 1024 * 1024;

    /// <summary>Whether Herald declares queues, exchanges and bindings as it uses them (off when an operator owns the topology).</summary>
    public bool DeclareTopology { get; set; } = true;

    /// <summary>
    /// How many channels publish in parallel with confirms on, each carrying many unconfirmed messages (one channel with
    /// confirms off, to keep send order). Default: one per two cores of this machine, 1 to 4; each channel is a process
    /// of its own in the broker, which pays on many cores and costs CPU on few.
    /// </summary>
    public int PublisherChannels { get; set; } = Math.Clamp(Environment.ProcessorCount / 2, 1, 4);

    /// <summary>
    /// How many handled deliveries may share one <c>basic.ack multiple=true</c> (sent when the batch is full or after 2 ms).
    /// Null: a quarter of the consumer's prefetch, at most 64. 1: every delivery is acked on its own as it is handled.
    /// </summary>
    public int? AckBatchSize { get; set; }

    /// <summary>How long the client waits between attempts to recover a lost connection, and a message the dead-letter store and queue both refused waits before it goes back to its queue.</summary>
    public TimeSpan NetworkRecoveryInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>The CloudEvents <c>source</c> written when a message carries no <c>herald-source</c> header.</summary>
    public string Source { get; set; } = "/herald";

    /// <summary>Name of the queue that holds a queue's messages for a delay before they return to it. Default <c>{queue}.retry.{ms}</c>.</summary>
    public Func<string, TimeSpan, string> RetryQueueName { get; set; } = DefaultRetryQueueName;

    /// <summary>Name of the queue that holds a topic's delayed publishes until they fan out. Default <c>{topic}.delay.{ms}</c>.</summary>
    public Func<string, TimeSpan, string> DelayQueueName { get; set; } = DefaultDelayQueueName;

    /// <summary>Name of a queue's dead-letter queue. Default <c>{queue}.dead-letter</c>.</summary>
    public Func<string, string> DeadLetterQueueName { get; set; } = DefaultDeadLetterQueueName;

    /// <summary>
    /// Most messages a dead-letter queue holds (<c>x-max-length</c>), the retention of the transport's own dead letters
    /// (they hold a message only while the dead-letter store is unreachable); null (the default) sets no limit. Changing it
    /// on an existing dead-letter queue makes RabbitMQ refuse the declaration: delete that queue first.
    /// </summary>
    public int? DeadLetterQueueMaxLength { get; set; }

    /// <summary>What a full dead-letter queue does (<c>x-overflow</c>); by default it refuses the new one, so nothing is lost.</summary>
    public RabbitMqOverflow DeadLetterQueueOverflow { get; set; } = RabbitMqOverflow.RejectPublish;

    /// <summary>
    /// Queues that also take plain JSON messages from other clients (no CloudEvents attributes), keyed by queue name, with
    /// the Herald message type to give them: <c>RawQueues["orders-in"] = "order-placed"</c>.
    /// </summary>
    public IDictionary<string, string> RawQueues { get; private set; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>
    /// Whether the queue gauges read the management HTTP API (ready and unacked counts); off, or while the API is
    /// unreachable, they fall back to a passive declare, which gives the ready count only.
    /// </summary>
    public bool UseManagementApi { get; set; } = true;

    /// <summary>
    /// The management HTTP API the queue gauges read, such as <c>http://monitor:secret@rabbit:15672/</c>. Null (the default):
    /// the AMQP host on port 15672 (<c>https</c> on 15671 for <c>amqps</c>), with the AMQP credentials when it names none.
    /// </summary>
    public Uri? ManagementUri { get; set; }

    /// <summary>
    /// How old the queue gauges' counts may be before a metrics collection starts a new read in the background;
    /// <see cref="TimeSpan.MaxValue"/> reads them once and never again (it is only compared with their age, never waited on).
    /// </summary>
    public TimeSpan GaugeRefreshInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Returns what is wrong with the settings; empty when they are usable.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (ConnectionUri is null || !ConnectionUri.IsAbsoluteUri || (ConnectionUri.Scheme != "amqp" && ConnectionUri.Scheme != "amqps"))
        {
            errors.Add($"ConnectionUri must be an absolute amqp:// or amqps:// URI, not '{UserInfo.Redact(ConnectionUri)}'.");
        }
        else if (string.IsNullOrEmpty(ConnectionUri.UserInfo))
        {
            // The client would otherwise fall back to guest/guest, which RabbitMQ only allows from localhost.
            errors.Add($"ConnectionUri '{ConnectionUri}' names no user: give the credentials to connect with, as in amqp://user:password@{ConnectionUri.Authority}/.");
        }

        if (string.IsNullOrWhiteSpace(ClientProvidedName))
        {
            errors.Add("ClientProvidedName must not be empty.");
        }

        if (!Enum.IsDefined(QueueType))
        {
            errors.Add($"QueueType {QueueType} is not a known queue type.");
        }

        if (Prefetch is < 1 or > ushort.MaxValue)
        {
            errors.Add($"Prefetch must be between 1 and {ushort.MaxValue}, not {Prefetch}.");
        }

        if (MaxMessageBytes < 1)
        {
            errors.Add($"MaxMessageBytes must be at least 1, not {MaxMessageBytes}.");
        }

        if (PublisherChannels < 1)
        {
            errors.Add($"PublisherChannels must be at least 1, not {PublisherChannels}.");
        }

        if (AckBatchSize is < 1 or > ushort.MaxValue)
        {
            errors.Add($"AckBatchSize must be between 1 and {ushort.MaxValue}, not {AckBatchSize}.");
        }

        if (NetworkRecoveryInterval <= TimeSpan.Zero)
        {
            errors.Add($"NetworkRecoveryInterval must be positive, not {NetworkRecoveryInterval}.");
        }

        if (string.IsNullOrWhiteSpace(Source))
        {
            errors.Add("Source must not be empty.");
        }

        AtLeastOneWhenSet(errors, nameof(DeadLetterQueueMaxLength), DeadLetterQueueMaxLength);
        AtLeastOneWhenSet(errors, nameof(MaxDeliveries), MaxDeliveries);

        if (!Enum.IsDefined(DeadLetterQueueOverflow))
        {
            errors.Add($"DeadLetterQueueOverflow {DeadLetterQueueOverflow} is not a known overflow behaviour.");
        }

        if (RetryQueueName is null || DelayQueueName is null || DeadLetterQueueName is null)
        {
            errors.Add("RetryQueueName, DelayQueueName and DeadLetterQueueName must be set.");
        }

        if (ManagementUri is not null && (!ManagementUri.IsAbsoluteUri || (ManagementUri.Scheme != Uri.UriSchemeHttp && ManagementUri.Scheme != Uri.UriSchemeHttps)))
        {
            errors.Add($"ManagementUri must be an absolute http:// or https:// URI when set, not '{UserInfo.Redact(ManagementUri)}'.");
        }

        if (GaugeRefreshInterval <= TimeSpan.Zero)
        {
            errors.Add($"GaugeRefreshInterval must be positive, not {GaugeRefreshInterval}.");
        }

        // Waited on between recovery attempts: a longer interval passed here and threw there, ending the consumer's recovery.
        errors.AddRange(OptionsProblems.Of(this, static (options, problems) => problems.AtMostLongestWait(nameof(NetworkRecoveryInterval), options.NetworkRecoveryInterval)).Messages);

        foreach (var (queue, type) in RawQueues)
        {
            if (string.IsNullOrWhiteSpace(queue) || string.IsNullOrWhiteSpace(type))
            {
                errors.Add($"RawQueues entry '{queue}' = '{type}' needs a queue name and a message type.");
            }
        }

        return errors;
    }

    private static void AtLeastOneWhenSet(List<string> errors, string setting, int? value)
    {
        if (value is < 1)
        {
            errors.Add($"{setting} must be at least 1 when set, not {value}.");
        }
    }

    /// <summary>A snapshot, so changing the options object later does not change a running transport.</summary>
    internal RabbitMqTransportOptions Snapshot()
    {
        var copy = (RabbitMqTransportOptions)MemberwiseClone();
        copy.RawQueues = new Dictionary<string, string>(RawQueues, StringComparer.Ordinal);
        return copy;
    }

    private static string DefaultRetryQueueName(string queue, TimeSpan delay) =>
        $"{queue}.retry.{(long)delay.TotalMilliseconds}";

    private static string DefaultDelayQueueName(string topic, TimeSpan delay) =>
        $"{topic}.delay.{(long)delay.TotalMilliseconds}";

    private static string DefaultDeadLetterQueueName(string queue) => $"{queue}.dead-letter";
}
