namespace Herald.Kafka.Transport;

/// <summary>Where a consumer starts reading a partition.</summary>
public enum KafkaStartPosition
{
    /// <summary>From the group's committed offset; where the group has none yet, from the oldest record (nothing sent is lost).</summary>
    Committed = 0,

    /// <summary>From the oldest record of each partition this consumer is first given, whatever the group committed (a replay).</summary>
    Earliest = 1,

    /// <summary>From the end of each partition this consumer is first given, whatever the group committed (only new records).</summary>
    Latest = 2,

    /// <summary>From the first record at or after <see cref="KafkaTransportOptions.StartTimestamp"/> of each partition this consumer is first given.</summary>
    Timestamp = 3,
}
