using Herald.Handling;
using Microsoft.Extensions.Logging;

namespace Herald.Internal;

/// <summary>
/// One partition of a broker that delivers every message of a partition key from the same partition of a topic (Kafka),
/// as this process holds it now: <see cref="Assignment"/> is new each time the process is given the partition again.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class BrokerPartition(string topic, int partition, long assignment)
{
    /// <summary>The topic (the broker's name of it) the partition belongs to.</summary>
    public string Topic { get; } = topic;

    /// <summary>The partition's number in the topic.</summary>
    public int Partition { get; } = partition;

    /// <summary>Identifies this assignment of it in this process: a new value after every revocation and assignment.</summary>
    public long Assignment { get; } = assignment;

    /// <inheritdoc />
    public override string ToString() => $"{Topic}[{Partition}]#{Assignment}";
}

/// <summary>A delivery that came from a key-partitioned broker partition; the Kafka transport's deliveries implement it.</summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public interface IBrokerPartitionedDelivery
{
    /// <summary>The partition the message was read from, as this process holds it.</summary>
    BrokerPartition BrokerPartition { get; }
}

/// <summary>
/// Told by a key-partitioned transport when its consumer of <c>queue</c> is given partitions and when it gives them up
/// (after the handlers of their messages finished, or were abandoned). Called on the transport's own thread: return
/// quickly and never block on a delivery. Register implementations as singletons; the transport calls each of them.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public interface IBrokerPartitionObserver
{
    /// <summary>The consumer of <paramref name="queue"/> holds <paramref name="partitions"/> from now on.</summary>
    void OnAssigned(string queue, IReadOnlyList<BrokerPartition> partitions);

    /// <summary>The consumer of <paramref name="queue"/> no longer holds <paramref name="partitions"/>; nothing of them runs here any more.</summary>
    void OnRevoked(string queue, IReadOnlyList<BrokerPartition> partitions);
}

/// <summary>Where a handled message came from on a key-partitioned broker.</summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class BrokerPartitions
{
    /// <summary>The broker partition the message of <paramref name="context"/> was delivered from, or null when its transport does not partition by key.</summary>
    public static BrokerPartition? Of(MessageContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return (context.Delivery as IBrokerPartitionedDelivery)?.BrokerPartition;
    }

    /// <summary>Tells every observer of a change (assigned, else revoked); an observer that throws is logged and does not stop the others.</summary>
    public static void Notify(IEnumerable<IBrokerPartitionObserver> observers, string queue, IReadOnlyList<BrokerPartition> partitions, bool assigned, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(observers);
        ArgumentNullException.ThrowIfNull(partitions);
        ArgumentNullException.ThrowIfNull(logger);
        if (partitions.Count == 0)
        {
            return;
        }

        foreach (var observer in observers)
        {
            try
            {
                if (assigned)
                {
                    observer.OnAssigned(queue, partitions);
                }
                else
                {
                    observer.OnRevoked(queue, partitions);
                }
            }
#pragma warning disable CA1031 // An observer's fault must not break the transport's rebalance.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Hosting.Log.PartitionObserverFailed(logger, ex, queue);
            }
        }
    }
}
