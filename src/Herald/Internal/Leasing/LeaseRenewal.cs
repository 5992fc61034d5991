using Herald.Diagnostics;

namespace Herald.Internal;

/// <summary>
/// Keeps one lease alive while its work runs (an idempotency lock, a pending inbox mark): renews it every third of its time
/// to live on the clock's timers, a failed renewal again after a twelfth, until disposed. When a renewal finds the lease
/// lost (another holder took it), <see cref="Token"/> fires, the loss is counted, and renewing stops: the work is cancelled,
/// and its completion, which the store guards with the same token, is refused. So too when renewals keep failing (this node
/// cannot reach the store) until the lease has run out by the clock: another holder may take it and run the same work, so
/// this work is cancelled (<see cref="RanOut"/>), as a leased queue cancels a handler whose lease ran out.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class LeaseRenewal : IAsyncDisposable
{
    private readonly Func<CancellationToken, ValueTask<bool>> _renew;
    private readonly Action _lost;
    private readonly Action _ranOut;
    private readonly Action<Exception> _failed;
    private readonly string _kind;
    private readonly TimeSpan _period;
    private readonly TimeSpan _retry;
    private readonly CancellationTokenSource _lease;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();
    private readonly ITimer _timer;
    private readonly TimeProvider _clock;
    private readonly TimeSpan _timeToLive;
    private DateTimeOffset _due;

    // Until when the store holds the lease at least: a time to live from the start of the last renewal that succeeded (from
    // the start, for the store may have extended it at any moment of the call), or from the start.
    private DateTimeOffset _heldUntil;
    private Task _renewing = Task.CompletedTask;
    private bool _disposed;

    /// <summary>Starts renewing; the first renewal is due a third of <paramref name="timeToLive"/> from now.</summary>
    /// <param name="renew">Extends the lease by its time to live; false when it is no longer this holder's.</param>
    /// <param name="timeToLive">How long one renewal holds the lease.</param>
    /// <param name="kind">The lease's kind on the lost-leases metric: <c>idempotency_lock</c>, <c>inbox_mark</c>.</param>
    /// <param name="timeProvider">The clock of the renewals.</param>
    /// <param name="lost">Called once when the lease is found lost (the caller logs it).</param>
    /// <param name="failed">Called when a renewal throws (the caller logs it); the renewal is tried again soon.</param>
    /// <param name="ranOut">Called once when renewals failed until the lease ran out (the caller logs it); the work is cancelled.</param>
    /// <param name="cancellationToken">The work's own token, which <see cref="Token"/> follows as well.</param>
    public LeaseRenewal(
        Func<CancellationToken, ValueTask<bool>> renew,
        TimeSpan timeToLive,
        string kind,
        TimeProvider timeProvider,
        Action lost,
        Action<Exception> failed,
        Action ranOut,
        CancellationToken cancellationToken = default)
        : this(renew, timeToLive, kind, timeProvider, lost, failed, ranOut, renewedAt: null, cancellationToken)
    {
    }

    // renewedAt: when the lease was last extended, if before now (renewals that start over after a pause): the first
    // renewal is due a third of its time to live from then, and it runs out a time to live from then.
    internal LeaseRenewal(
        Func<CancellationToken, ValueTask<bool>> renew,
        TimeSpan timeToLive,
        string kind,
        TimeProvider timeProvider,
        Action lost,
        Action<Exception> failed,
        Action ranOut,
        DateTimeOffset? renewedAt,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(renew);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeToLive, TimeSpan.Zero);
        ArgumentNullException.ThrowIfNull(timeProvider);
        ArgumentNullException.ThrowIfNull(lost);
        ArgumentNullException.ThrowIfNull(failed);
        ArgumentNullException.ThrowIfNull(ranOut);
        _renew = renew;
        _ranOut = ranOut;
        _timeToLive = timeToLive;
        _lost = lost;
        _failed = failed;
        _kind = kind;
        _period = timeToLive / 3;
        _retry = timeToLive / 12;
        _lease = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _clock = timeProvider;
        var now = timeProvider.GetUtcNow();
        var from = renewedAt is { } at && at < now ? at : now;
        _due = from + _period;
        _heldUntil = from + timeToLive;
        _timer = timeProvider.CreateTimer(static s => ((LeaseRenewal)s!).Due(), this, _due > now ? _due - now : TimeSpan.Zero, Timeout.InfiniteTimeSpan);
    }

    /// <summary>The work's token: fires when the work's own token does, and when the lease is found lost.</summary>
    public CancellationToken Token => _lease.Token;

    /// <summary>True once a renewal found the lease lost, or renewals failed until it ran out (<see cref="RanOut"/>).</summary>
    public bool IsLost { get; private set; }

    /// <summary>True when the lease was given up because renewals failed until it ran out, not because another holder took it.</summary>
    public bool RanOut { get; private set; }

    /// <summary>The lease's kind, as on the lost-leases metric.</summary>
    public string Kind => _kind;

    /// <summary>
    /// Renews the lease now, to learn whether it is still this holder's (just before a commit that relies on it); false,
    /// and <see cref="Token"/> fired, when it is lost. A renewal that throws counts as not confirmed.
    /// </summary>
    public async ValueTask<bool> ConfirmAsync(CancellationToken cancellationToken = default)
    {
        if (IsLost)
        {
            return false;
        }

        bool held;
        var started = _clock.GetUtcNow();
        try
        {
            held = await _renew(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            _failed(ex);
            return false;
        }

        if (!held)
        {
            await MarkLostAsync().ConfigureAwait(false);
            return false;
        }

        lock (_gate)
        {
            _heldUntil = started + _timeToLive;
        }

        return true;
    }

    /// <summary>Stops renewing and waits for a renewal under way.</summary>
    public async ValueTask DisposeAsync()
    {
        Task renewing;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            renewing = _renewing;
        }

        await _timer.DisposeAsync().ConfigureAwait(false);
        await _stopping.CancelAsync().ConfigureAwait(false);
        await renewing.ConfigureAwait(false);
        _stopping.Dispose();
        _lease.Dispose();
    }

    private async ValueTask MarkLostAsync(bool ranOut = false)
    {
        bool disposed;
        lock (_gate)
        {
            if (IsLost)
            {
                return;
            }

            IsLost = true;
            RanOut = ranOut;
            disposed = _disposed;
        }

        HeraldDiagnostics.LeasesLost.Add(1, new KeyValuePair<string, object?>(MetricNames.LeaseKindTag, _kind));
        (ranOut ? _ranOut : _lost)();
        if (!disposed)
        {
            await _lease.CancelAsync().ConfigureAwait(false);
        }
    }

    private void Due()
    {
        lock (_gate)
        {
            if (!_disposed)
            {
                _renewing = RenewAsync();
            }
        }
    }

    private async Task RenewAsync()
    {
        // The next renewal is due a period after this one was due, not after it finished: a slow renewal does not push
        // the schedule back, and a clock that moved on meanwhile (a test's fake one) finds the next one due at once.
        var retry = false;
        var started = _clock.GetUtcNow();
        try
        {
            if (!await _renew(_stopping.Token).ConfigureAwait(false))
            {
                await MarkLostAsync().ConfigureAwait(false);
                return;
            }

            lock (_gate)
            {
                _heldUntil = started + _timeToLive;
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
            return;
        }
#pragma warning disable CA1031 // Runs on a timer with nobody to report to: handed to the caller's log, and tried again soon.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            _failed(ex);
            retry = true;
            bool ranOut;
            lock (_gate)
            {
                ranOut = _clock.GetUtcNow() >= _heldUntil;
            }

            if (ranOut)
            {
                await MarkLostAsync(ranOut: true).ConfigureAwait(false);
                return;
            }
        }

        lock (_gate)
        {
            if (!_disposed)
            {
                var now = _clock.GetUtcNow();
                _due = retry ? now + _retry : _due + _period;
                _timer.Change(_due > now ? _due - now : TimeSpan.Zero, Timeout.InfiniteTimeSpan);
            }
        }
    }
}
