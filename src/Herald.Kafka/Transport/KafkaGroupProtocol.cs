namespace Herald.Kafka.Transport;

/// <summary>The consumer group protocol the consumers speak.</summary>
public enum KafkaGroupProtocol
{
    /// <summary>The classic protocol with the cooperative-sticky assignor: every broker version; a rebalance takes seconds.</summary>
    Classic = 0,

    /// <summary>The next-generation protocol of KIP-848 (Kafka 4.0 and later): the broker assigns partitions, a rebalance takes moments.</summary>
    Consumer = 1,
}
