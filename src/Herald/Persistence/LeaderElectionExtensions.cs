using Herald.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Persistence;

/// <summary>The loop that background services of the core (the outbox relay, projection runners) run their work in.</summary>
internal static class LeaderElectionExtensions
{
    /// <summary>
    /// Runs <paramref name="work"/> only while this node leads <paramref name="resource"/>, until <paramref name="stoppingToken"/>
    /// fires: tries to acquire the lease every <paramref name="retryInterval"/>, runs the work with a token that is cancelled
    /// when the lease is lost or the service stops, releases the lease when the work ends, and tries again
    /// <paramref name="retryInterval"/> later, whether the lease was lost or the work returned while leading. Work
    /// that throws is logged and run again (after the lease is released and <paramref name="retryInterval"/> passed): only
    /// stopping ends the loop.
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

            Exception? failure = null;
            await using (lease.ConfigureAwait(false))
            {
                Log.Leading(logger, resource);
                using var leading = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, lease.LeadershipLost);
                try
                {
                    await work(leading.Token).ConfigureAwait(false);
                }
                catch (Exception) when (lease.LeadershipLost.IsCancellationRequested && !stoppingToken.IsCancellationRequested)
                {
                    // Lost: handled below, like work that noticed the loss and returned. Whatever the work threw then (the
                    // engine that took the lease with it, restarting, fails its queries too) is part of the loss (issue 10).
                }
                catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
                {
                    // The work failed while still leading: let go (below) and try again, rather than end the background
                    // service and with it the host (issue 10).
                    failure = ex;
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    // Thrown once the stop began, so the stop's (a send the stop cut short that the transport failed
                    // otherwise than by a cancellation): the loop ends as stopped. It used to fail the background service,
                    // and the outbox relay skipped the last pass that sends that message again.
                    Log.LeadingWorkFailedAtStop(logger, ex, resource);
                }

                if (failure is null && !lease.IsHeld && !stoppingToken.IsCancellationRequested)
                {
                    Log.LeadershipLost(logger, resource, retryInterval);
                }
            }

            if (failure is not null)
            {
                Log.LeadingWorkFailed(logger, failure, resource, retryInterval);
            }

            // As after a failed try, whether the work failed, lost the lease or returned while leading: a backend that
            // reports each lease lost right after granting it, or work that returns at once (nothing to do), made the loop
            // spin against the store.
            if (!stoppingToken.IsCancellationRequested)
            {
                await Task.Delay(retryInterval, timeProvider, stoppingToken).ConfigureAwait(false);
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
