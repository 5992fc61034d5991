namespace Herald.Nats.Diagnostics;

/// <summary>Names of the NATS transport's instruments (on Herald's one meter, "Herald") and of the tags they carry.</summary>
public static class NatsMetricNames
{
    /// <summary>Gauge of messages of the stream the queue's durable consumer has not been delivered yet (JetStream <c>num_pending</c>).</summary>
    public const string ConsumerPending = "herald.nats.consumer.pending";

    /// <summary>Gauge of messages delivered to the queue's durable consumer and not acked yet (JetStream <c>num_ack_pending</c>).</summary>
    public const string ConsumerAckPending = "herald.nats.consumer.ack_pending";

    /// <summary>Gauge of the queue's delayed messages not yet due: the messages waiting in its delay stream.</summary>
    public const string ConsumerDelayed = "herald.nats.consumer.delayed";

    /// <summary>Tag: the stream the consumer reads.</summary>
    public const string StreamTag = "herald.nats.stream";

    /// <summary>Tag: the durable consumer's name.</summary>
    public const string ConsumerTag = "herald.nats.consumer";
}
