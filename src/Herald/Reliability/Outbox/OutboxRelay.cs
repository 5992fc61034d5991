using Herald.Hosting;
using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using Herald.Diagnostics;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Herald.Reliability.Outbox;

/// <summary>
/// Sends what the outbox holds: woken by each commit that added messages and every <see cref="OutboxOptions.PollInterval"/>,
/// it reads pending messages oldest first, sends them in order (a failed message holds back the later ones with its
/// partition key), marks them sent, and backs off exponentially while the transport fails. A message whose send fails
/// waits on its own back-off (the rows behind it go on) and is dead-lettered after <see cref="OutboxOptions.MaxAttempts"/>;
/// one the transport refuses for good (too large, a name or delay past its limits, a topology conflict) goes to the dead
/// letters at once. Sent rows are deleted in bounded batches once past <see cref="OutboxOptions.Retention"/>. It relays only while this node leads the outbox
/// (<see cref="ILeaderElection"/>, resource <see cref="LeadershipResource"/>), so one relay sends at a time per store. At the
/// host's stop it makes a last pass over what is due, bounded by the host's stop token.
/// </summary>
internal sealed class OutboxRelay(
    IOutboxStore store,
    ITransport transport,
    IDeadLetterStore deadLetters,
    OutboxSignal signal,
    ILeaderElection election,
    IOptions<OutboxOptions> options,
    TimeProvider timeProvider,
    ILoggerFactory? loggerFactory = null,
    DeadLetterMonitor? monitor = null)
    : BackgroundService
{
    /// <summary>
    /// Whether handlers' messages go through the outbox, committing with their unit of work: a relay runs and
    /// <see cref="OutboxOptions.RouteHandlerMessages"/> is on. The handlers' pipeline and the saga sweep decide alike.
    /// </summary>
    internal static bool CarriesHandlerMessages(OutboxRelay? relay, IOptions<OutboxOptions>? options) =>
        relay is not null && options is { Value.RouteHandlerMessages: true };

    /// <summary>The resource whose leader relays: one relay sends at a time per outbox, so per-key order holds.</summary>
    internal const string LeadershipResource = "outbox-relay";

    private const int MaxFailuresPerBatch = 3;

    /// <summary>How far past the transport's MaxDelay a due time may lie and still be taken for clock skew between nodes.</summary>
    private static readonly TimeSpan ClockSkewAllowance = TimeSpan.FromMinutes(5);
    private static readonly ConcurrentDictionary<OutboxRelay, byte> Active = new();
    private readonly OutboxOptions _options = options.Value;
    private readonly ILogger _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Herald.Outbox");
    private long _pending;
    private DateTimeOffset _nextCleanup;
    private DateTimeOffset _nextCount;
    private StrongBox<CancellationToken>? _stop;

    /// <summary>The backlog as the gauge reports it (tests).</summary>
    internal long Pending => Interlocked.Read(ref _pending);

    public static IEnumerable<Measurement<long>> Observe()
    {
        foreach (var relay in Active.Keys)
        {
            yield return new Measurement<long>(Interlocked.Read(ref relay._pending));
        }
    }

    /// <summary>
    /// Sends one batch of due messages. Returns whether a full batch went out (more may wait) and whether the transport
    /// looks down (sends failed and none went out), so the relay as a whole backs off.
    /// </summary>
    public async ValueTask<(bool More, bool Failed)> RelayBatchAsync(CancellationToken cancellationToken)
    {
        var pending = await store.FetchPendingAsync(_options.BatchSize, timeProvider.GetUtcNow(), cancellationToken).ConfigureAwait(false);
        if (pending.Count == 0)
        {
            return (false, false);
        }

        var heldBack = new HashSet<string>(StringComparer.Ordinal);
        var settled = new List<Guid>(pending.Count);
        var delivered = 0;
        var failures = 0;
        try
        {
            foreach (var message in pending)
            {
                if (message.PartitionKey is { } key && heldBack.Contains(key))
                {
                    continue;
                }

                var (outcome, failure) = await TrySendAsync(message, cancellationToken).ConfigureAwait(false);
                switch (outcome)
                {
                    case SendOutcome.Sent:
                        delivered++;
                        settled.Add(message.Id);
                        continue;
                    case SendOutcome.DeadLettered:
                        settled.Add(message.Id);
                        continue;
                }

                failures++;
                if (message.PartitionKey is { } failedKey)
                {
                    heldBack.Add(failedKey);
                }

                if (await GiveUpOrWaitAsync(message, failure!, cancellationToken).ConfigureAwait(false))
                {
                    settled.Add(message.Id);
                }

                if (failures >= MaxFailuresPerBatch)
                {
                    // The transport may be down: stop hammering it. The failed rows wait on their own, so the next batch
                    // starts with the rows behind them.
                    break;
                }
            }
        }
        finally
        {
            if (settled.Count > 0)
            {
                // Whatever went out is marked even when the batch is cut short, so it is not sent twice.
                await store.MarkSentAsync(settled, timeProvider.GetUtcNow(), CancellationToken.None).ConfigureAwait(false);
            }
        }

        return (failures == 0 && pending.Count == _options.BatchSize, failures > 0 && delivered == 0);
    }

    /// <summary>Deletes sent messages past the retention, in bounded batches; returns how many.</summary>
    public async ValueTask<long> CleanupAsync(CancellationToken cancellationToken)
    {
        var now = timeProvider.GetUtcNow();
        if (_options.Retention >= now - DateTimeOffset.MinValue)
        {
            // Kept for longer than the calendar reaches back (TimeSpan.MaxValue: for ever): nothing is old enough.
            return 0;
        }

        var cutoff = now - _options.Retention;
        long total = 0;
        int deleted;
        do
        {
            deleted = await store.DeleteSentAsync(cutoff, _options.CleanupBatchSize, cancellationToken).ConfigureAwait(false);
            total += deleted;
        }
        while (deleted == _options.CleanupBatchSize);

        return total;
    }

    public override void Dispose()
    {
        Active.TryRemove(this, out _);
        base.Dispose();
    }

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        // A start after a stop relays until its own stop.
        Volatile.Write(ref _stop, null);
        return base.StartAsync(cancellationToken);
    }

    /// <summary>Stops relaying, then sends what is due in a last pass (<see cref="LastPassAsync"/>) until <paramref name="cancellationToken"/> fires.</summary>
    public override Task StopAsync(CancellationToken cancellationToken)
    {
        // Kept before the base cancels the loop: the last pass ends with the host's stop (its shutdown timeout), not with
        // the loop.
        Volatile.Write(ref _stop, new StrongBox<CancellationToken>(cancellationToken));
        return base.StopAsync(cancellationToken);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // A running relay reports its backlog on the pending gauge (reading the gauge creates it) until it is disposed.
        Active.TryAdd(this, 0);
        _ = HeraldDiagnostics.OutboxPending;
        try
        {
            await election.RunWhileLeadingAsync(LeadershipResource, RelayAsync, _options.PollInterval, timeProvider, _logger, stoppingToken)
                .ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }

        // Ended by the host's stop, not by a dispose without one.
        if (Volatile.Read(ref _stop) is { } stop)
        {
            await LastPassAsync(stop.Value).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// At the host's stop: the last handlers' commits woke the relay just before their acks, and the stop cancelled the loop
    /// (and a send it was making), so what they committed would wait for the next start (and be lost with the in-memory
    /// store). Sends what is due, batch after batch, until nothing is, a send fails, or the host's stop token fires; only
    /// as the leader, since another node that leads sends it.
    /// </summary>
    private async Task LastPassAsync(CancellationToken cancellationToken)
    {
        try
        {
            var lease = await election.TryAcquireAsync(LeadershipResource, cancellationToken).ConfigureAwait(false);
            if (lease is null)
            {
                return;
            }

            await using (lease.ConfigureAwait(false))
            {
                using var leading = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, lease.LeadershipLost);
                bool more, failed;
                do
                {
                    (more, failed) = await RelayBatchAsync(leading.Token).ConfigureAwait(false);
                }
                while (more && !failed);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The host's stop gave up waiting: what is left stays in the outbox.
        }
        catch (Exception ex)
        {
            Log.OutboxLastPassFailed(_logger, ex);
        }
    }

    /// <summary>Relays until <paramref name="leading"/> fires: the host stops, or this node no longer leads the outbox.</summary>
    private async Task RelayAsync(CancellationToken leading)
    {
        var backoff = TimeSpan.Zero;
        _nextCleanup = Outbox.Later(timeProvider.GetUtcNow(), _options.CleanupInterval);
        try
        {
            while (!leading.IsCancellationRequested)
            {
                bool more, failed;
                try
                {
                    (more, failed) = await RelayBatchAsync(leading).ConfigureAwait(false);
                }
                catch (Exception ex) when (!leading.IsCancellationRequested)
                {
                    backoff = NextBackoff(backoff);
                    Log.OutboxStoreFailed(_logger, ex, backoff);
                    await Task.Delay(backoff, timeProvider, leading).ConfigureAwait(false);
                    continue;
                }

                if (failed)
                {
                    // The backlog builds up while the transport is down: counted on every back-off, or the gauge would show
                    // the count from before the outage for as long as it lasts.
                    await CountPendingAsync(leading).ConfigureAwait(false);

                    // Commits do not cut a backoff short: the transport needs the pause, whatever is waiting.
                    backoff = NextBackoff(backoff);
                    await Task.Delay(backoff, timeProvider, leading).ConfigureAwait(false);
                    continue;
                }

                backoff = TimeSpan.Zero;
                if (more)
                {
                    // A backlog sent in full batches is counted once a poll interval on the way, not only once it is gone.
                    if (timeProvider.GetUtcNow() >= _nextCount)
                    {
                        await CountPendingAsync(leading).ConfigureAwait(false);
                    }

                    continue;
                }

                await HousekeepAsync(leading).ConfigureAwait(false);
                await signal.WaitAsync(_options.PollInterval, timeProvider, leading).ConfigureAwait(false);
            }
        }
        finally
        {
            // The backlog is reported by the node that leads, so summing the gauge over nodes counts it once.
            Interlocked.Exchange(ref _pending, 0);
        }
    }

    private async ValueTask HousekeepAsync(CancellationToken cancellationToken)
    {
        try
        {
            if (timeProvider.GetUtcNow() >= _nextCleanup)
            {
                await CleanupAsync(cancellationToken).ConfigureAwait(false);
                _nextCleanup = Outbox.Later(timeProvider.GetUtcNow(), _options.CleanupInterval);
            }
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            // Housekeeping waits for the next round; sending goes on.
            Log.OutboxStoreFailed(_logger, ex, _options.PollInterval);
        }

        await CountPendingAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Counts the backlog for the pending gauge; a failed count is logged and the next round counts again.</summary>
    private async ValueTask CountPendingAsync(CancellationToken cancellationToken)
    {
        try
        {
            Interlocked.Exchange(ref _pending, await store.CountPendingAsync(cancellationToken).ConfigureAwait(false));
            _nextCount = timeProvider.GetUtcNow() + _options.PollInterval;
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            Log.OutboxStoreFailed(_logger, ex, _options.PollInterval);
        }
    }

    private TimeSpan NextBackoff(TimeSpan current)
    {
        if (current < _options.MinBackoff)
        {
            return _options.MinBackoff;
        }

        var doubled = current * 2;
        return doubled > _options.MaxBackoff ? _options.MaxBackoff : doubled;
    }

    /// <summary>
    /// After a transient failure: dead-letters the message once it has failed <see cref="OutboxOptions.MaxAttempts"/>
    /// times (true), else (or when the dead letters refuse it) holds it back on its own back-off so the rows behind it go
    /// on (false).
    /// </summary>
    private async ValueTask<bool> GiveUpOrWaitAsync(OutboxMessage message, Exception failure, CancellationToken cancellationToken)
    {
        var attempts = message.Attempts + 1;
        if (attempts >= _options.MaxAttempts
            && await DeadLetterAsync(message, failure, attempts, $"The outbox relay gave up after {attempts} failed sends", cancellationToken).ConfigureAwait(false))
        {
            return true;
        }

        // Also when the dead letters refused it: left due, the row was sent again on every poll and every commit's wake-up.
        try
        {
            await store.RecordFailedAttemptAsync(message.Id, timeProvider.GetUtcNow() + RowBackoff(attempts), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            // Not counted this time: the row is tried again after the relay's own back-off.
            Log.OutboxStoreFailed(_logger, ex, _options.MinBackoff);
        }

        return false;
    }

    /// <summary>The pause of one message after its <paramref name="attempts"/>-th failure: doubling from MinBackoff up to MaxBackoff.</summary>
    private TimeSpan RowBackoff(int attempts)
    {
        var backoff = _options.MinBackoff;
        for (var i = 1; i < attempts && backoff < _options.MaxBackoff; i++)
        {
            backoff *= 2;
        }

        return backoff > _options.MaxBackoff ? _options.MaxBackoff : backoff;
    }

    private async ValueTask<(SendOutcome Outcome, Exception? Failure)> TrySendAsync(OutboxMessage message, CancellationToken cancellationToken)
    {
        var now = timeProvider.GetUtcNow();
        var capabilities = transport.Capabilities;
        var options = message.DeliverAt is { } at && at > now ? new SendOptions { Delay = WithinReach(at - now, capabilities.MaxDelay) } : null;
        try
        {
            // Rows written before add-time checks existed, or straight into the store, are checked here too.
            SendChecks.Validate(capabilities, message.Destination, message.Envelope, options?.Delay);
            if (message.DestinationKind == OutboxDestinationKind.Topic)
            {
                await transport.PublishAsync(message.Destination, message.Envelope, options, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await transport.SendAsync(message.Destination, message.Envelope, options, cancellationToken).ConfigureAwait(false);
            }

            HeraldDiagnostics.OutboxSent.Add(1, new KeyValuePair<string, object?>(MetricNames.DestinationTag, message.Destination));
            HeraldDiagnostics.Published(message.Destination, message.Envelope);
            return (SendOutcome.Sent, null);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested && SendChecks.IsPermanent(ex, capabilities))
        {
            return await DeadLetterAsync(message, ex, message.Attempts + 1, reason: null, cancellationToken).ConfigureAwait(false)
                ? (SendOutcome.DeadLettered, null)
                : (SendOutcome.Failed, ex);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            HeraldDiagnostics.OutboxSendFailures.Add(1, new KeyValuePair<string, object?>(MetricNames.DestinationTag, message.Destination));
            Log.OutboxSendFailed(_logger, ex, message.Id, message.Envelope.MessageType, message.Destination);
            return (SendOutcome.Failed, ex);
        }
    }

    // The due time was set on the clock of the node that added the row, which checked the delay against the limit there: a
    // little past the limit on this node's clock is the two clocks disagreeing (or this one stepped back), not a delay the
    // transport cannot hold. Sent with the limit, it arrives off by less than that disagreement instead of dead-lettered.
    private static TimeSpan WithinReach(TimeSpan delay, TimeSpan maxDelay) =>
        delay > maxDelay && delay - maxDelay <= ClockSkewAllowance ? maxDelay : delay;

    private async ValueTask<bool> DeadLetterAsync(OutboxMessage message, Exception exception, int attempts, string? reason, CancellationToken cancellationToken)
    {
        var deadLetter = SendRejections.Create(
            message.Envelope, message.Destination, message.DestinationKind == OutboxDestinationKind.Topic, exception, timeProvider.GetUtcNow(), attempts, reason, message.DeliverAt);
        bool added;
        try
        {
            added = await deadLetters.AddAsync(deadLetter, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            // Not recorded anywhere else yet: keep it in the outbox and try again after the backoff.
            Log.OutboxStoreFailed(_logger, ex, _options.MinBackoff);
            return false;
        }

        if (added)
        {
            DeadLetterMonitor.Added(monitor, deadLetter.Endpoint, message.Envelope.MessageType);
        }

        Log.OutboxMessageRejected(_logger, exception, message.Id, message.Envelope.MessageType, message.Destination);
        return true;
    }

    private enum SendOutcome
    {
        Sent,
        DeadLettered,
        Failed,
    }
}
