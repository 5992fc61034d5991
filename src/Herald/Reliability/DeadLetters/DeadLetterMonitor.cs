using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Threading.Channels;
using Herald.Diagnostics;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Herald.Reliability.DeadLetters;

/// <summary>
/// Keeps the dead-letter count of each known endpoint (this host's, and every endpoint it dead-letters or manages):
/// refreshed after changes made in this process and every <see cref="DeadLetterOptions.MonitorInterval"/>, reported by
/// the <c>herald.dead_letters</c> gauge, and raising an alert when a count reaches its threshold. The consuming pipeline
/// only <see cref="Signal"/>s a new dead letter; counting runs here, in the background, once for any number of signals
/// that arrived meanwhile, so a burst of dead letters costs the consumer nothing and the store a few counts.
/// </summary>
internal sealed class DeadLetterMonitor : BackgroundService
{
    private static readonly ConcurrentDictionary<DeadLetterMonitor, byte> Active = new();
    private readonly ConcurrentDictionary<string, long> _counts = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, byte> _alerted = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _refreshing = new(1, 1);
    private readonly ConcurrentDictionary<string, byte> _signalled = new(StringComparer.Ordinal);
    private readonly Channel<bool> _wake = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });
    private readonly IDeadLetterStore _store;
    private readonly IServiceProvider _services;
    private readonly DeadLetterOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;

    public DeadLetterMonitor(
        IDeadLetterStore store,
        IServiceProvider services,
        IOptions<DeadLetterOptions> options,
        IOptions<HeraldOptions> heraldOptions,
        TimeProvider timeProvider,
        ILoggerFactory? loggerFactory = null)
    {
        _store = store;
        _services = services;
        _options = options.Value;
        _timeProvider = timeProvider;
        _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Herald.DeadLetters");
        _counts.TryAdd(heraldOptions.Value.EndpointName, 0);
        Active.TryAdd(this, 0);

        // Touch the diagnostics so the gauge exists as soon as a monitor does.
        _ = HeraldDiagnostics.DeadLetters;
    }

    /// <summary>The last known dead-letter count per endpoint.</summary>
    public IReadOnlyDictionary<string, long> Counts => _counts;

    public static IEnumerable<Measurement<long>> Observe()
    {
        foreach (var monitor in Active.Keys)
        {
            foreach (var (endpoint, count) in monitor._counts)
            {
                yield return new Measurement<long>(count, new KeyValuePair<string, object?>(MetricNames.EndpointTag, endpoint));
            }
        }
    }

    /// <summary>
    /// Counts a dead letter the store has just added on <c>herald.messages.dead_lettered</c> and asks for its endpoint's count
    /// to be refreshed. Every path that adds one calls this (the consuming pipeline, the outbox relay, the stored-event
    /// publisher), so the counter, the gauge and the alert see it, also under an endpoint this host does not consume.
    /// </summary>
    internal static void Added(DeadLetterMonitor? monitor, string endpoint, string? messageType)
    {
        HeraldDiagnostics.MessagesDeadLettered.Add(
            1, new KeyValuePair<string, object?>(MetricNames.EndpointTag, endpoint), new KeyValuePair<string, object?>(MetricNames.MessageTypeTag, messageType));
        monitor?.Signal(endpoint);
    }

    /// <summary>Asks for the endpoint's count to be refreshed soon, in the background; returns at once and never throws.</summary>
    public void Signal(string endpoint)
    {
        _signalled.TryAdd(endpoint, 0);
        _wake.Writer.TryWrite(true);
    }

    /// <summary>Counts an endpoint's dead letters again and raises or re-arms its alert. Never throws (failures are logged).</summary>
    public async ValueTask RefreshAsync(string endpoint, CancellationToken cancellationToken = default)
    {
        // Raised after the lock is let go: a hook that hangs (a chat service that never answers) must not hold up the
        // other endpoints' counts, nor the manager's retries and purges, which refresh through this lock.
        DeadLetterThresholdReached? alert = null;
        await _refreshing.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            long count;
            try
            {
                count = await _store.CountAsync(new DeadLetterQuery { Endpoint = endpoint }, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                Log.DeadLetterCountFailed(_logger, ex, endpoint);
                return;
            }

            if (count > _options.MaxCount && await TrimAsync(endpoint, cancellationToken).ConfigureAwait(false) is > 0 and var trimmed)
            {
                count = Math.Max(0, count - trimmed);
            }

            _counts[endpoint] = count;
            // Re-armed only once the count fell to half the threshold: a count hovering at it (a retried message that
            // still fails takes one off and brings it back) would otherwise alert again on every return.
            var threshold = _options.ThresholdFor(endpoint);
            if (threshold <= 0 || count <= threshold / 2)
            {
                _alerted.TryRemove(endpoint, out _);
                return;
            }

            if (count < threshold)
            {
                return;
            }

            if (_alerted.TryAdd(endpoint, 0))
            {
                alert = new DeadLetterThresholdReached(endpoint, count, threshold, _timeProvider.GetUtcNow());
            }
        }
        finally
        {
            _refreshing.Release();
        }

        if (alert is not null)
        {
            await RaiseAsync(alert, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Applies the retention to an endpoint's dead letters; returns how many went. Never throws (failures are logged).</summary>
    private async ValueTask<long> TrimAsync(string endpoint, CancellationToken cancellationToken)
    {
        if (!_options.HasRetention)
        {
            return 0;
        }

        try
        {
            var trimmed = await DeadLetterRetention.TrimAsync(_store, endpoint, _options.MaxAge, _options.MaxCount, _options.BatchSize, _timeProvider.GetUtcNow(), cancellationToken).ConfigureAwait(false);
            if (trimmed > 0)
            {
                Log.DeadLettersTrimmed(_logger, trimmed, endpoint);
            }

            return trimmed;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Log.DeadLetterTrimFailed(_logger, ex, endpoint);
            return 0;
        }
    }

    public override void Dispose()
    {
        Active.TryRemove(this, out _);
        _refreshing.Dispose();
        base.Dispose();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                // Every endpoint each interval; in between, only those signalled, each once however often it was.
                foreach (var endpoint in _counts.Keys)
                {
                    _signalled.TryRemove(endpoint, out _);
                    await TrimAsync(endpoint, stoppingToken).ConfigureAwait(false);
                    await RefreshAsync(endpoint, stoppingToken).ConfigureAwait(false);
                }

                var due = _timeProvider.GetUtcNow() + _options.MonitorInterval;
                while (await WaitForSignalAsync(due - _timeProvider.GetUtcNow(), stoppingToken).ConfigureAwait(false))
                {
                    foreach (var endpoint in _signalled.Keys)
                    {
                        _signalled.TryRemove(endpoint, out _);
                        await RefreshAsync(endpoint, stoppingToken).ConfigureAwait(false);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    /// <summary>Waits for a signal (true) or until <paramref name="timeout"/> has passed (false).</summary>
    private async ValueTask<bool> WaitForSignalAsync(TimeSpan timeout, CancellationToken stoppingToken)
    {
        if (timeout <= TimeSpan.Zero)
        {
            return false;
        }

        using var elapsed = new CancellationTokenSource(timeout, _timeProvider);
        using var either = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, elapsed.Token);
        try
        {
            await _wake.Reader.ReadAsync(either.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException) when (!stoppingToken.IsCancellationRequested)
        {
            return false;
        }
    }

    private async ValueTask RaiseAsync(DeadLetterThresholdReached alert, CancellationToken cancellationToken)
    {
        Log.DeadLetterThresholdReached(_logger, alert.Endpoint, alert.Count, alert.Threshold);
        HeraldDiagnostics.DeadLetterAlerts.Add(1, new KeyValuePair<string, object?>(MetricNames.EndpointTag, alert.Endpoint));
        foreach (var hook in _services.GetServices<IDeadLetterAlert>())
        {
            try
            {
                await hook.OnThresholdReachedAsync(alert, cancellationToken).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // A failing hook must not stop the other hooks, nor the pipeline that dead-lettered.
            catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
#pragma warning restore CA1031
            {
                Log.DeadLetterAlertFailed(_logger, ex, hook.GetType().Name, alert.Endpoint);
            }
        }
    }
}
