using Herald.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Persistence;

/// <summary>The loop that background services of the core (the outbox relay, projection runners) run their work in.</summary>
internal static class LeaderElectionExtensions
{
    /// <summary>
    /// Runs <paramref name="work"/> only while this node leads <paramref name="resource"/>, until <paramref name="stoppingToken"/>
    /// fires: tries to acquire the lease every <paramref name="retryInterval"/>, runs the work with a token that is cancelled
    /// when the lease is lost or the service stops, releases the lease when the work ends, and tries again after a loss.
    /// </summary>
    public static async Task RunWhileLeadingAsync(
        this ILeaderElection election,
        string resource,
        Func<CancellationToken, Task> work,
        TimeSpan retryInterval,
        TimeProvider timeProvider,
        ILogger logger,
        CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            var lease = await TryAcquireAsync(election, resource, retryInterval, logger, stoppingToken).ConfigureAwait(false);
            if (lease is null)
            {
                await Task.Delay(retryInterval, timeProvider, stoppingToken).ConfigureAwait(false);
                continue;
            }

            await using (lease.ConfigureAwait(false))
            {
                Log.Leading(logger, resource);
                using var leading = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, lease.LeadershipLost);
                try
                {
                    await work(leading.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (lease.LeadershipLost.IsCancellationRequested && !stoppingToken.IsCancellationRequested)
                {
                    // Lost: handled below, like work that noticed the loss and returned.
                }

                if (!lease.IsHeld && !stoppingToken.IsCancellationRequested)
                {
                    Log.LeadershipLost(logger, resource, retryInterval);
                }
            }
        }
    }

    private static async ValueTask<LeaderLease?> TryAcquireAsync(
        ILeaderElection election, string resource, TimeSpan retryInterval, ILogger logger, CancellationToken cancellationToken)
    {
        try
        {
            return await election.TryAcquireAsync(resource, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            // The engine is unreachable: nobody here leads, and the next try may find it back.
            Log.ElectionFailed(logger, ex, resource, retryInterval);
            return null;
        }
    }
}
