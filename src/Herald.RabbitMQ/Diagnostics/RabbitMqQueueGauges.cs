using System.Collections.Concurrent;
using Herald.Internal;
using Herald.RabbitMQ.Transport;

namespace Herald.RabbitMQ.Diagnostics;

/// <summary>
/// The observable gauge <c>herald.rabbitmq.messages</c> on Herald's meter: the messages of each queue this process consumes,
/// tagged with the queue and the state (<c>ready</c>: waiting, <c>unacked</c>: delivered to a consumer and not yet acked).
/// A collection reports the counts last read and, when they are older than the transport's
/// <see cref="RabbitMqTransportOptions.GaugeRefreshInterval"/>, starts one read in the background (see
/// <see cref="RabbitMqQueueCounter"/>): a collection never waits on the broker.
/// </summary>
internal static class RabbitMqQueueGauges
{
    /// <summary>The gauge's name.</summary>
    public const string Messages = "herald.rabbitmq.messages";

    /// <summary>Tag: which count, <c>ready</c> or <c>unacked</c>.</summary>
    public const string StateTag = "herald.rabbitmq.state";

    private static readonly ConcurrentDictionary<RabbitMqTransport, RabbitMqQueueCounter> Counters = new();

    private static readonly QueueCountGauge<RabbitMqTransport, QueueCounts> Gauge = new(
        Messages, StateTag, "Messages of a consumed RabbitMQ queue, by state (ready, unacked).", States);

    /// <summary>Starts reporting the counts of a queue the transport consumes.</summary>
    public static void Watch(RabbitMqTransport transport, string queue)
    {
        var counter = Counters.GetOrAdd(transport, static t => new RabbitMqQueueCounter(t));
        Gauge.Watch(
            transport,
            queue,
            transport.TimeProvider,
            transport.Options.GaugeRefreshInterval,
            () => counter.CountAsync(queue, CancellationToken.None),
            transport.Logger);
    }

    /// <summary>Stops reporting the transport's queues (it is disposed).</summary>
    public static void Forget(RabbitMqTransport transport)
    {
        Gauge.Forget(transport);
        if (Counters.TryRemove(transport, out var counter))
        {
            counter.Dispose();
        }
    }

    /// <summary>The watched queue's counts as last read (tests); null when it is not watched or was never read.</summary>
    internal static QueueCounts? Last(RabbitMqTransport transport, string queue) => Gauge.Last(transport, queue);

    private static IEnumerable<(string State, long Value)> States(QueueCounts counts)
    {
        yield return ("ready", counts.Ready);
        if (counts.Unacked is { } unacked)
        {
            yield return ("unacked", unacked);
        }
    }
}

/// <summary>A queue's counts: ready, and unacked when the management API gave it (null after a passive declare).</summary>
internal sealed record QueueCounts(long Ready, long? Unacked);
