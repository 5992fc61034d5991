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
    private readonly ILogger _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Herald.DeadLetters");

    /// <summary>Moves every native dead letter of the endpoint into the store now; returns how many. Throws when the store or transport fails.</summary>
    public async ValueTask<int> DrainAsync(CancellationToken cancellationToken)
    {
        if (transport is not INativeDeadLetterSource source)
        {
            return 0;
        }

        var endpoint = heraldOptions.Value.EndpointName;
        var moved = await source.DrainDeadLettersAsync(
            endpoint,
            (native, ct) => store.AddAsync(DeadLetterHeaders.ToDeadLetter(native, timeProvider.GetUtcNow()), ct),
            cancellationToken).ConfigureAwait(false);
        if (moved > 0)
        {
            Log.NativeDeadLettersDrained(_logger, moved, endpoint);
            monitor?.Signal(endpoint);
        }

        return moved;
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
