using Confluent.Kafka;
using Herald.Internal;

namespace Herald.Kafka.Transport;

/// <summary>Settings of the Kafka transport, validated when the transport is created (or at host start).</summary>
public sealed class KafkaTransportOptions
{
    /// <summary>The brokers to bootstrap from, such as <c>kafka-1:9092,kafka-2:9092</c>.</summary>
    public string BootstrapServers { get; set; } = string.Empty;

    /// <summary>The client id the brokers see in their logs and quotas.</summary>
    public string ClientId { get; set; } = "herald";

    /// <summary>Prepended to a queue's name to make its consumer group id (a queue is a consumer group on its topics).</summary>
    public string GroupIdPrefix { get; set; } = string.Empty;

    /// <summary>The group protocol of the consumers: classic works with every broker, consumer (KIP-848) needs Kafka 4.0.</summary>
    public KafkaGroupProtocol GroupProtocol { get; set; } = KafkaGroupProtocol.Classic;

    /// <summary>Where consumers start reading (see <see cref="KafkaStartPosition"/>).</summary>
    public KafkaStartPosition StartPosition { get; set; } = KafkaStartPosition.Committed;

    /// <summary>The time to start from when <see cref="StartPosition"/> is <see cref="KafkaStartPosition.Timestamp"/>.</summary>
    public DateTimeOffset? StartTimestamp { get; set; }

    /// <summary>Whether Herald creates the topics it uses through the admin API (off: the brokers auto-create them, or an operator does).</summary>
    public bool CreateTopics { get; set; } = true;

    /// <summary>Partitions of a topic Herald creates: the most consumers of one queue that can share its work.</summary>
    public int TopicPartitions { get; set; } = 6;

    /// <summary>Replicas of a topic Herald creates; -1 takes the broker's default.</summary>
    public short ReplicationFactor { get; set; } = -1;

    /// <summary>Largest body accepted, in bytes; larger messages are refused before sending. Below Kafka's 1 MB default, leaving room for headers.</summary>
    public int MaxMessageBytes { get; set; } = 900 * 1024;

    /// <summary>How often handled offsets are committed while consuming (they are also committed on revocation and stop).</summary>
    public TimeSpan CommitInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// How long handlers of a revoked partition may go on before they are cancelled (abandoned): their messages are then
    /// not committed, so the partition's next owner handles them again.
    /// </summary>
    public TimeSpan RevocationTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long <c>ConsumeAsync</c> waits for the group to give the new consumer its partitions before it returns all the same.</summary>
    public TimeSpan AssignmentTimeout { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// How long a consumer's stop, once its token fired (and a dispose), waits for the client to leave the group and close.
    /// Past it the stop returns and leaves the client closing in the background (warning 6035); should the close never end,
    /// the group hands the partitions on after its session timeout, and their next owner handles what was not committed.
    /// </summary>
    public TimeSpan CloseTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The CloudEvents <c>source</c> written when a message carries no <c>herald-source</c> header.</summary>
    public string Source { get; set; } = "/herald";

    /// <summary>Name of the topic that holds a queue's (or topic's) delayed and retried messages until they are due. Default <c>{name}.retry</c>.</summary>
    public Func<string, string> RetryTopicName { get; set; } = static name => name + ".retry";

    /// <summary>Name of a queue's dead-letter topic. Default <c>{queue}.dead-letter</c>.</summary>
    public Func<string, string> DeadLetterTopicName { get; set; } = static queue => queue + ".dead-letter";

    /// <summary>More producer settings (security, compression...), applied after Herald's; idempotence and acks=all stay on.</summary>
    public Action<ProducerConfig>? ConfigureProducer { get; set; }

    /// <summary>
    /// More consumer settings (security, fetch sizes...), applied after Herald's; auto commit stays off. Its reset policy is
    /// the queues' only: the retry relays and the dead-letter drain read Herald's own topics from their start.
    /// </summary>
    public Action<ConsumerConfig>? ConfigureConsumer { get; set; }

    /// <summary>Returns what is wrong with the settings; empty when they are usable.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(BootstrapServers))
        {
            errors.Add("BootstrapServers must name at least one broker, as in kafka-1:9092.");
        }

        if (string.IsNullOrWhiteSpace(ClientId))
        {
            errors.Add("ClientId must not be empty.");
        }

        if (GroupIdPrefix is null)
        {
            errors.Add("GroupIdPrefix must not be null (use an empty string for none).");
        }

        if (!Enum.IsDefined(GroupProtocol))
        {
            errors.Add($"GroupProtocol {GroupProtocol} is not a known group protocol.");
        }

        if (!Enum.IsDefined(StartPosition))
        {
            errors.Add($"StartPosition {StartPosition} is not a known start position.");
        }
        else if (StartPosition == KafkaStartPosition.Timestamp && StartTimestamp is null)
        {
            errors.Add("StartTimestamp must be set when StartPosition is Timestamp.");
        }

        if (TopicPartitions < 1)
        {
            errors.Add($"TopicPartitions must be at least 1, not {TopicPartitions}.");
        }

        if (ReplicationFactor is 0 or < -1)
        {
            errors.Add($"ReplicationFactor must be -1 (the broker's default) or at least 1, not {ReplicationFactor}.");
        }

        if (MaxMessageBytes < 1)
        {
            errors.Add($"MaxMessageBytes must be at least 1, not {MaxMessageBytes}.");
        }

        if (CommitInterval <= TimeSpan.Zero)
        {
            errors.Add($"CommitInterval must be positive, not {CommitInterval}.");
        }

        if (RevocationTimeout < TimeSpan.Zero)
        {
            errors.Add($"RevocationTimeout must not be negative, not {RevocationTimeout}.");
        }

        if (AssignmentTimeout < TimeSpan.Zero)
        {
            errors.Add($"AssignmentTimeout must not be negative, not {AssignmentTimeout}.");
        }

        if (CloseTimeout < TimeSpan.Zero)
        {
            errors.Add($"CloseTimeout must not be negative, not {CloseTimeout}.");
        }

        // Each is waited on (a timed wait, a task's WaitAsync) or turned into a timestamp: a longer one passed here and threw
        // (or overflowed) there, in the consume loop or the rebalance callback.
        errors.AddRange(OptionsProblems.Of(this, static (options, problems) =>
        {
            problems.AtMostLongestWait(nameof(CommitInterval), options.CommitInterval);
            problems.AtMostLongestWait(nameof(RevocationTimeout), options.RevocationTimeout);
            problems.AtMostLongestWait(nameof(AssignmentTimeout), options.AssignmentTimeout);
            problems.AtMostLongestWait(nameof(CloseTimeout), options.CloseTimeout);
        }).Messages);

        if (string.IsNullOrWhiteSpace(Source))
        {
            errors.Add("Source must not be empty.");
        }

        if (RetryTopicName is null || DeadLetterTopicName is null)
        {
            errors.Add("RetryTopicName and DeadLetterTopicName must be set.");
        }

        return errors;
    }

    /// <summary>A copy, so changing the options object later does not change a running transport.</summary>
    internal KafkaTransportOptions Snapshot() => (KafkaTransportOptions)MemberwiseClone();
}
