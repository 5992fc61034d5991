using Herald.Hosting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Herald.Reliability.Inbox;

/// <summary>Deletes expired inbox marks every <see cref="InboxOptions.CleanupInterval"/>, in bounded batches.</summary>
internal sealed class InboxCleanupService(IInbox inbox, IOptions<InboxOptions> options, TimeProvider timeProvider, ILoggerFactory? loggerFactory = null)
    : BackgroundService
{
    private readonly ILogger _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Herald.Inbox");

    /// <summary>Deletes expired marks until a batch comes back short; returns how many.</summary>
    public async ValueTask<long> CleanupAsync(CancellationToken cancellationToken)
    {
        var batch = options.Value.CleanupBatchSize;
        long total = 0;
        int deleted;
        do
        {
            deleted = await inbox.DeleteExpiredAsync(batch, cancellationToken).ConfigureAwait(false);
            total += deleted;
        }
        while (deleted == batch);

        return total;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = options.Value.CleanupInterval;
        try
        {
            while (true)
            {
                await Task.Delay(interval, timeProvider, stoppingToken).ConfigureAwait(false);
                try
                {
                    await CleanupAsync(stoppingToken).ConfigureAwait(false);
                }
                catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
                {
                    Log.InboxCleanupFailed(_logger, ex, interval);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }
}
