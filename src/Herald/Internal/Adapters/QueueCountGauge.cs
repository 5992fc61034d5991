using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Herald.Diagnostics;
using Microsoft.Extensions.Logging;

namespace Herald.Internal;

/// <summary>
/// An observable gauge on Herald's meter of the messages of each queue this process consumes, by state, tagged with the queue
/// and the state. A collection reports the counts last read and, when they are older than the transport's refresh interval,
/// starts one read in the background (never two at once for a queue): a collection never waits on the broker. A failed read
/// is logged and the last counts stay, until reads have failed for a few refresh intervals (<see cref="GaugeFreshness"/>):
/// the queue is then not reported until a read succeeds.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
/// <typeparam name="TTransport">The transport whose queues are counted.</typeparam>
/// <typeparam name="TCounts">One reading of a queue's counts.</typeparam>
public sealed class QueueCountGauge<TTransport, TCounts>
    where TTransport : class
    where TCounts : class
{
    private readonly ConcurrentDictionary<(TTransport Transport, string Queue), Watched> _queues = new();
    private readonly string _name;
    private readonly string _stateTag;
    private readonly Func<TCounts, IEnumerable<(string State, long Value)>> _states;

    /// <summary>
    /// Creates the gauge <paramref name="name"/>, whose measurements <paramref name="states"/> gives for each reading, the state
    /// under the tag <paramref name="stateTag"/>.
    /// </summary>
    public QueueCountGauge(string name, string stateTag, string description, Func<TCounts, IEnumerable<(string State, long Value)>> states)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentException.ThrowIfNullOrEmpty(stateTag);
        ArgumentNullException.ThrowIfNull(states);
        _name = name;
        _stateTag = stateTag;
        _states = states;
        HeraldDiagnostics.Meter.CreateObservableGauge(name, Observe, "{message}", description);
    }

    /// <summary>
    /// Starts reporting a queue the transport consumes (once; a second call for the same queue changes nothing). <paramref name="read"/>
    /// reads its counts (null: nothing new to report), at most once every <paramref name="refreshInterval"/> on <paramref name="clock"/>;
    /// a read that throws, and the counts going stale, are logged to <paramref name="logger"/>.
    /// </summary>
    public void Watch(TTransport transport, string queue, TimeProvider clock, TimeSpan refreshInterval, Func<Task<TCounts?>> read, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(queue);
        _queues.TryAdd((transport, queue), new Watched(queue, clock, refreshInterval, read, logger, new GaugeFreshness(clock, refreshInterval, logger, _name, queue)));
    }

    /// <summary>Stops reporting the transport's queues (it is disposed).</summary>
    public void Forget(TTransport transport)
    {
        foreach (var key in _queues.Keys)
        {
            if (ReferenceEquals(key.Transport, transport))
            {
                _queues.TryRemove(key, out _);
            }
        }
    }

    /// <summary>The counts last read for a watched queue; null when it is not watched or was never read.</summary>
    public TCounts? Last(TTransport transport, string queue) =>
        _queues.TryGetValue((transport, queue), out var watched) ? watched.Counts : null;

    private IEnumerable<Measurement<long>> Observe()
    {
        foreach (var watched in _queues.Values)
        {
            watched.RefreshIfStale();
            if (watched.Counts is { } counts && watched.Freshness.IsFresh())
            {
                foreach (var (state, value) in _states(counts))
                {
                    yield return new(value, new KeyValuePair<string, object?>(MetricNames.DestinationTag, watched.Queue), new KeyValuePair<string, object?>(_stateTag, state));
                }
            }
        }
    }

    /// <summary>One consumed queue and its counts as last read.</summary>
    private sealed class Watched(string queue, TimeProvider clock, TimeSpan refreshInterval, Func<Task<TCounts?>> read, ILogger logger, GaugeFreshness freshness)
    {
        private int _refreshing;
        private long _readAt = long.MinValue;
        private TCounts? _counts;

        public string Queue => queue;

        public GaugeFreshness Freshness => freshness;

        public TCounts? Counts => Volatile.Read(ref _counts);

        public void RefreshIfStale()
        {
            var readAt = Volatile.Read(ref _readAt);
            if ((readAt != long.MinValue && clock.GetElapsedTime(readAt) < refreshInterval) || Interlocked.Exchange(ref _refreshing, 1) != 0)
            {
                return;
            }

            freshness.Refreshing();
            _ = Task.Run(RefreshAsync);
        }

        private async Task RefreshAsync()
        {
            try
            {
                if (await read().ConfigureAwait(false) is { } counts)
                {
                    Volatile.Write(ref _counts, counts);
                }

                Volatile.Write(ref _readAt, clock.GetTimestamp());
                freshness.Refreshed();
            }
#pragma warning disable CA1031 // A gauge read runs in the background with nobody to throw to: logged, and the last counts stay.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                AdapterLog.GaugeReadFailed(logger, ex, queue);
            }
            finally
            {
                Volatile.Write(ref _refreshing, 0);
            }
        }
    }
}
