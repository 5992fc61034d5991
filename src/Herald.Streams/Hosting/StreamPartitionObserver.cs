using Herald.Internal;

namespace Herald.Streams.Hosting;

/// <summary>
/// Tells the transport-source streams of this host which partitions of a key-partitioned broker (Kafka) its consumers
/// hold, so each stream loads a partition's committed state when it is given the partition and drops it when it goes.
/// </summary>
internal sealed class StreamPartitionObserver(StreamProcessors processors) : IBrokerPartitionObserver
{
    public void OnAssigned(string queue, IReadOnlyList<BrokerPartition> partitions)
    {
        foreach (var processor in processors.Transport)
        {
            processor.OnBrokerAssigned(queue, partitions);
        }
    }

    public void OnRevoked(string queue, IReadOnlyList<BrokerPartition> partitions)
    {
        foreach (var processor in processors.Transport)
        {
            processor.OnBrokerRevoked(queue, partitions);
        }
    }
}
