using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Herald.Diagnostics;
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

    private static readonly ConcurrentDictionary<(RabbitMqTransport Transport, string Queue), Watched> Queues = new();

    static RabbitMqQueueGauges()
    {
        HeraldDiagnostics.Meter.CreateObservableGauge(Messages, Observe, "{message}", "Messages of a consumed RabbitMQ queue, by state (ready, unacked).");
    }

    /// <summary>Starts reporting the counts of a queue the transport consumes.</summary>
    public static void Watch(RabbitMqTransport transport, string queue)
    {
        var counter = Counters.GetOrAdd(transport, static t => new RabbitMqQueueCounter(t));
        Queues.TryAdd((transport, queue), new Watched(transport, counter, queue));
    }

    /// <summary>Stops reporting the transport's queues (it is disposed).</summary>
    public static void Forget(RabbitMqTransport transport)
    {
        foreach (var key in Queues.Keys)
        {
            if (ReferenceEquals(key.Transport, transport))
            {
                Queues.TryRemove(key, out _);
            }
        }

        if (Counters.TryRemove(transport, out var counter))
        {
            counter.Dispose();
        }
    }

    /// <summary>The watched queue's counts as last read (tests); null when it is not watched or was never read.</summary>
    internal static QueueCounts? Last(RabbitMqTransport transport, string queue) =>
        Queues.TryGetValue((transport, queue), out var watched) ? watched.Counts : null;

    private static IEnumerable<Measurement<long>> Observe()
    {
        foreach (var watched in Queues.Values)
        {
            watched.RefreshIfStale();
            if (watched.Counts is { } counts)
            {
                yield return Measure(counts.Ready, watched.Queue, "ready");
                if (counts.Unacked is { } unacked)
                {
                    yield return Measure(unacked, watched.Queue, "unacked");
                }
            }
        }
    }

    private static Measurement<long> Measure(long value, string queue, string state) =>
        new(value, new KeyValuePair<string, object?>(MetricNames.DestinationTag, queue), new KeyValuePair<string, object?>(StateTag, state));

    /// <summary>One consumed queue and its counts as last read.</summary>
    private sealed class Watched(RabbitMqTransport transport, RabbitMqQueueCounter counter, string queue)
    {
        private int _refreshing;
        private long _readAt = long.MinValue;
        private QueueCounts? _counts;

        public string Queue => queue;

        public QueueCounts? Counts => Volatile.Read(ref _counts);

        public void RefreshIfStale()
        {
            var readAt = Volatile.Read(ref _readAt);
            if ((readAt != long.MinValue && transport.TimeProvider.GetElapsedTime(readAt) < transport.Options.GaugeRefreshInterval)
                || Interlocked.Exchange(ref _refreshing, 1) != 0)
            {
                return;
            }

            _ = Task.Run(RefreshAsync);
        }

        private async Task RefreshAsync()
        {
            try
            {
                if (await counter.CountAsync(queue, CancellationToken.None).ConfigureAwait(false) is { } counts)
                {
                    Volatile.Write(ref _counts, counts);
                }

                Volatile.Write(ref _readAt, transport.TimeProvider.GetTimestamp());
            }
#pragma warning disable CA1031 // A gauge read runs in the background with nobody to report to: logged, and the last counts stay.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Log.GaugeReadFailed(transport.Logger, ex, queue);
            }
            finally
            {
                Volatile.Write(ref _refreshing, 0);
            }
        }
    }
}

/// <summary>A queue's counts: ready, and unacked when the management API gave it (null after a passive declare).</summary>
internal sealed record QueueCounts(long Ready, long? Unacked);
