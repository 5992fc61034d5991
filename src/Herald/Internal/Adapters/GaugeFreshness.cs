using Microsoft.Extensions.Logging;

namespace Herald.Internal;

/// <summary>
/// Whether a gauge refreshed in the background still has a value worth reporting. A value whose refreshes have been failing
/// (or hanging) for <see cref="StaleAfterIntervals"/> refresh intervals is stale: the gauge reports nothing for it rather
/// than a flat, healthy-looking line through an outage, logs once that it went stale, and reports again once refreshed.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class GaugeFreshness
{
    /// <summary>How many refresh intervals a value's refreshes may fail before it is no longer reported.</summary>
    public const int StaleAfterIntervals = 3;

    private readonly TimeProvider _clock;
    private readonly TimeSpan _staleAfter;
    private readonly ILogger _logger;
    private readonly string _gauge;
    private readonly string _subject;

    // The start of the first refresh not followed by a success (0: the last refresh succeeded, or none started).
    private long _failingSince;
    private int _reportedStale;

    /// <summary>
    /// Tracks the value <paramref name="subject"/> (a queue, a projection) of the gauge <paramref name="gauge"/>, refreshed
    /// every <paramref name="refreshInterval"/> on <paramref name="clock"/>; going stale is logged to <paramref name="logger"/>.
    /// </summary>
    public GaugeFreshness(TimeProvider clock, TimeSpan refreshInterval, ILogger logger, string gauge, string subject)
    {
        ArgumentNullException.ThrowIfNull(clock);
        ArgumentNullException.ThrowIfNull(logger);
        _clock = clock;
        _staleAfter = refreshInterval * StaleAfterIntervals;
        _logger = logger;
        _gauge = gauge;
        _subject = subject;
    }

    /// <summary>A refresh starts (call before reading; an earlier unfinished or failed one keeps the time they began failing).</summary>
    public void Refreshing() => Interlocked.CompareExchange(ref _failingSince, Math.Max(1, _clock.GetTimestamp()), 0);

    /// <summary>A refresh succeeded: the value is fresh again.</summary>
    public void Refreshed()
    {
        Volatile.Write(ref _failingSince, 0);
        Volatile.Write(ref _reportedStale, 0);
    }

    /// <summary>Whether the value may be reported now; false (logged the first time) while its refreshes have failed too long.</summary>
    public bool IsFresh()
    {
        var since = Volatile.Read(ref _failingSince);
        if (since == 0 || _clock.GetElapsedTime(since) < _staleAfter)
        {
            return true;
        }

        if (Interlocked.Exchange(ref _reportedStale, 1) == 0)
        {
            AdapterLog.GaugeStale(_logger, _gauge, _subject, _staleAfter);
        }

        return false;
    }
}
