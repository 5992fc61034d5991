using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Herald.Diagnostics;

namespace Herald.Internal;

/// <summary>
/// The observable gauge <c>herald.queue.messages</c>: for each leased queue this process consumes, its messages by state
/// (tags <c>herald.endpoint</c> and <c>herald.queue.state</c>: ready, leased, delayed). A collection reports the counts
/// last read and, when they are older than <see cref="RefreshAfter"/>, starts one count in the background, so a
/// collection never waits on the database. Counts that could not be read for a few refresh intervals are not reported
/// (<see cref="GaugeFreshness"/>) until a count succeeds.
/// </summary>
internal static class QueueDepthGauge
{
    /// <summary>How old the counts may be before a collection asks for new ones.</summary>
    public static readonly TimeSpan RefreshAfter = TimeSpan.FromSeconds(5);

    private static readonly ConcurrentDictionary<object, Watched> Queues = new();

    static QueueDepthGauge()
    {
        HeraldDiagnostics.Meter.CreateObservableGauge(MetricNames.QueueMessages, Observe, "{message}", "Messages of a consumed SQL queue, by state (ready, leased, delayed).");
    }

    /// <summary>Reports <paramref name="queue"/> through <paramref name="count"/> while <paramref name="owner"/> (its consumer) runs.</summary>
    public static void Watch(object owner, string queue, Func<CancellationToken, ValueTask<QueueDepth?>> count, GaugeFreshness freshness) =>
        Queues.TryAdd(owner, new Watched(queue, count, freshness));

    /// <summary>Stops reporting the queue of <paramref name="owner"/>.</summary>
    public static void Forget(object owner) => Queues.TryRemove(owner, out _);

    private static IEnumerable<Measurement<long>> Observe()
    {
        var now = Environment.TickCount64;
        foreach (var watched in Queues.Values)
        {
            watched.RefreshIfStale(now);
            if (watched.Depth is not { } depth || !watched.Freshness.IsFresh())
            {
                continue;
            }

            yield return Measure(depth.Ready, watched.Queue, "ready");
            yield return Measure(depth.Leased, watched.Queue, "leased");
            yield return Measure(depth.Delayed, watched.Queue, "delayed");
        }
    }

    private static Measurement<long> Measure(long value, string queue, string state) =>
        new(value, new KeyValuePair<string, object?>(MetricNames.EndpointTag, queue), new KeyValuePair<string, object?>(MetricNames.QueueStateTag, state));

    private sealed class Watched(string queue, Func<CancellationToken, ValueTask<QueueDepth?>> count, GaugeFreshness freshness)
    {
        private long _readAt = long.MinValue;
        private int _refreshing;
        private QueueDepth? _depth;

        public string Queue => queue;

        public GaugeFreshness Freshness => freshness;

        public QueueDepth? Depth => Volatile.Read(ref _readAt) == long.MinValue ? null : _depth;

        public void RefreshIfStale(long now)
        {
            var readAt = Volatile.Read(ref _readAt);
            if ((readAt != long.MinValue && now - readAt < (long)RefreshAfter.TotalMilliseconds) || Interlocked.Exchange(ref _refreshing, 1) == 1)
            {
                return;
            }

            freshness.Refreshing();
            _ = Task.Run(async () =>
            {
                try
                {
                    _depth = await count(CancellationToken.None).ConfigureAwait(false);
                    Volatile.Write(ref _readAt, Environment.TickCount64);
                    freshness.Refreshed();
                }
#pragma warning disable CA1031 // A count that fails (the database is down) leaves the last counts until they go stale; the next collection tries again.
                catch (Exception)
#pragma warning restore CA1031
                {
                }
                finally
                {
                    Volatile.Write(ref _refreshing, 0);
                }
            });
        }
    }
}
