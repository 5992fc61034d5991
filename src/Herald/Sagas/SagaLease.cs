using Herald.Hosting;
using Herald.Internal;
using Herald.Persistence;
using Microsoft.Extensions.Logging;

namespace Herald.Sagas;

/// <summary>
/// Keeps an instance fresh while this process runs one of its steps (or compensations) on a store several processes share,
/// so no sweep elsewhere takes it for stale (<see cref="SagaOptions.StaleAfter"/>): a save of the instance as it stands,
/// under its version check, every third of StaleAfter (<see cref="LeaseRenewal"/>). A renewal that conflicts finds the
/// instance taken (a sweep claimed it); renewals that fail until StaleAfter ran out leave it takeable. Either way the
/// step's token fires and its outcome is not committed.
/// </summary>
internal sealed class SagaLease(ISagaStore store, SagaInstance instance, TimeSpan staleAfter, TimeProvider clock, ILogger logger)
{
    private SagaInstance _instance = instance;

    // When the instance was last known saved (from the start of the save): a renewal that starts over after a stop (a
    // commit that failed, then a retry) counts StaleAfter from then, not from its own start.
    private DateTimeOffset _savedAt = clock.GetUtcNow();
    private LeaseRenewal? _renewal;
    private bool _lost;

    /// <summary>The instance as stored now: its version moves on with each renewal (read once stopped).</summary>
    public SagaInstance Instance => _instance;

    /// <summary>Renews from now on, unless it does already; returns the token the work runs under.</summary>
    public CancellationToken Start(CancellationToken cancellationToken)
    {
        ThrowIfLost();
        _renewal ??= new LeaseRenewal(
            RenewAsync,
            staleAfter,
            "saga_instance",
            clock,
            () => Log.SagaLeaseLost(logger, _instance.SagaType, _instance.Id),
            ex => Log.SagaLeaseRenewalFailed(logger, ex, _instance.SagaType, _instance.Id),
            () => Log.SagaLeaseRanOut(logger, _instance.SagaType, _instance.Id, staleAfter),
            _savedAt,
            cancellationToken);
        return _renewal.Token;
    }

    /// <summary>
    /// Stops renewing, waiting for a renewal under way, and returns the instance at the version stored now, which the
    /// commit saves over; throws <see cref="LeaseLostException"/> when the instance was taken or its lease ran out.
    /// </summary>
    public async ValueTask<SagaInstance> StopAsync()
    {
        await DisposeAsync().ConfigureAwait(false);
        ThrowIfLost();
        return _instance;
    }

    /// <summary>True once a renewal found the instance taken, or renewals failed until StaleAfter ran out.</summary>
    public bool IsLost => _lost || _renewal?.IsLost == true;

    /// <summary>Stops renewing (the run of the step is over, however it ended), waiting for a renewal under way.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_renewal is { } renewal)
        {
            _renewal = null;
            await renewal.DisposeAsync().ConfigureAwait(false);
            _lost |= renewal.IsLost;
        }
    }

    private void ThrowIfLost()
    {
        if (IsLost)
        {
            throw new LeaseLostException(
                $"Saga '{_instance.SagaType}' instance '{_instance.Id}' was taken over (or could be) while this process ran its step: its renewals found it saved by another runner, or failed for SagaOptions.StaleAfter. The step was cancelled and its outcome not committed.");
        }
    }

    private async ValueTask<bool> RenewAsync(CancellationToken cancellationToken)
    {
        try
        {
            // Not cancelled once sent: a save that took effect but whose reply was dropped would leave this runner a
            // version behind, and its step's commit would then conflict with its own renewal.
            var started = clock.GetUtcNow();
            var version = await store.SaveAsync(_instance, CancellationToken.None).ConfigureAwait(false);
            _instance = _instance with { Version = version };
            _savedAt = started;
            return true;
        }
        catch (SagaConcurrencyException conflict) when (conflict.SagaType == _instance.SagaType && conflict.Id == _instance.Id)
        {
            return false;
        }
    }
}
