using System.Runtime.ExceptionServices;
using Herald.Handling;
using Herald.Hosting;
using Herald.Transport;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Herald.Reliability.DeadLetters;

/// <summary>
/// Moves the transport's own dead letters of this host's endpoint into the <see cref="IDeadLetterStore"/>: at start and
/// every <see cref="DeadLetterOptions.DrainInterval"/>. They get there only while the store is unreachable (the pipeline's
/// fallback, with the dead-letter record in their headers), so a drain that fails waits for the next round; each is
/// removed from the transport only after the store took it, so nothing is lost and a repeated one is stored once (by id).
/// A dead letter the store refuses stays in the transport's dead letters, logged, and the drain goes on with the others,
/// so one the store keeps refusing does not hold back those behind it; the round stops only after
/// <see cref="RefusalsToStop"/> refusals in a row of letters not refused before (the store looks down).
/// </summary>
internal sealed class NativeDeadLetterDrain(
    ITransport transport,
    IDeadLetterStore store,
    HandlerRegistry handlers,
    IOptions<HeraldOptions> heraldOptions,
    IOptions<DeadLetterOptions> options,
    TimeProvider timeProvider,
    DeadLetterMonitor? monitor = null,
    ILoggerFactory? loggerFactory = null) : BackgroundService
{
    /// <summary>Refusals in a row, of letters the store took or never saw before, after which a round stops.</summary>
    internal const int RefusalsToStop = 3;

    // Bounds the memory of refused letters (and so what a round tries while the store is down).
    private const int RefusedRemembered = 1000;

    private readonly ILogger _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Herald.DeadLetters");

    // Message ids the store refused in an earlier round: refused again, they say nothing about the store being down.
    private readonly HashSet<Guid> _refused = [];
    private readonly SemaphoreSlim _round = new(1, 1);

    /// <summary>
    /// Moves every native dead letter of the endpoint the store takes into it now; returns how many. Throws (the first
    /// refusal) when the store refused one, after trying the others, or when the transport fails.
    /// </summary>
    public async ValueTask<int> DrainAsync(CancellationToken cancellationToken)
    {
        if (transport is not INativeDeadLetterSource source)
        {
            return 0;
        }

        var endpoint = heraldOptions.Value.EndpointName;
        await _round.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // Cancelled to stop the round once the store looks down: the source stops, leaving the rest where they are.
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            Exception? firstRefusal = null;
            var refusalsInARow = 0;
            var stored = 0;
            try
            {
                await source.DrainDeadLettersAsync(endpoint, MoveAsync, stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (firstRefusal is not null && !cancellationToken.IsCancellationRequested)
            {
                ExceptionDispatchInfo.Throw(firstRefusal);
            }
            finally
            {
                if (stored > 0)
                {
                    Log.NativeDeadLettersDrained(_logger, stored, endpoint);
                    monitor?.Signal(endpoint);
                }
            }

            return stored;

            async ValueTask MoveAsync(NativeDeadLetter native, CancellationToken ct)
            {
                try
                {
                    await store.AddAsync(DeadLetterHeaders.ToDeadLetter(native, timeProvider.GetUtcNow()), ct).ConfigureAwait(false);
                }
                catch (Exception ex) when (!ct.IsCancellationRequested)
                {
                    var messageId = native.Envelope.MessageId;
                    Log.NativeDeadLetterRefused(_logger, ex, messageId, native.Envelope.MessageType, endpoint);
                    firstRefusal ??= ex;
                    if (!_refused.Contains(messageId) && ++refusalsInARow >= RefusalsToStop)
                    {
                        await stop.CancelAsync().ConfigureAwait(false);
                    }

                    if (_refused.Count < RefusedRemembered)
                    {
                        _refused.Add(messageId);
                    }

                    throw;
                }

                _refused.Remove(native.Envelope.MessageId);
                refusalsInARow = 0;
                stored++;
            }
        }
        finally
        {
            _round.Release();
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Only an endpoint this host consumes has dead letters of its making.
        var settings = heraldOptions.Value;
        if (transport is not INativeDeadLetterSource || !settings.StartConsumer || !handlers.MessageTypes.Any())
        {
            return;
        }

        var interval = options.Value.DrainInterval;
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                try
                {
                    await DrainAsync(stoppingToken).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is not OperationCanceledException || !stoppingToken.IsCancellationRequested)
                {
                    Log.NativeDeadLetterDrainFailed(_logger, ex, settings.EndpointName, interval);
                }

                await Task.Delay(interval, timeProvider, stoppingToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }
}
