namespace Herald.Internal;

/// <summary>
/// The bounded wait of a consumer's stop for its running handlers, one for every transport: they finish, or once the stop's
/// token fires they are cancelled and given <see cref="AbandonGrace"/> more, after which the stop goes on without them. An
/// abandoned handler's delivery is left for the broker or its lease to bring back; the consumer must not settle it later.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class ConsumerStop
{
    /// <summary>
    /// How long handlers have, once cancelled, to end before the stop abandons them. A fixed grace: a consumer's stop has one
    /// token, in which the host's stop token is already linked with <see cref="Hosting.HeraldOptions.ShutdownTimeout"/>.
    /// </summary>
    public static readonly TimeSpan AbandonGrace = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Waits for <paramref name="running"/> (the consumer's workers); when <paramref name="cancellationToken"/> fires, cancels
    /// <paramref name="aborting"/> (the handlers' token) and waits at most <see cref="AbandonGrace"/> more, on
    /// <paramref name="timeProvider"/>. True when the workers ended; false when handlers that ignore their token were
    /// abandoned. A worker's failure is not thrown: a consume loop that died is reported when it dies (the consumer's
    /// <see cref="IConsumerCompletion.Completion"/>, which the host logs and shows to the health checks), and its stop must
    /// still do the rest of its work (settle, hand back, close) instead of failing the application's shutdown.
    /// </summary>
    public static async Task<bool> WaitAsync(Task running, CancellationTokenSource aborting, TimeProvider timeProvider, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(running);
        ArgumentNullException.ThrowIfNull(aborting);
        ArgumentNullException.ThrowIfNull(timeProvider);
        using (cancellationToken.Register(static s => ((CancellationTokenSource)s!).Cancel(), aborting))
        {
            // Ended, failed or not (a failure was the consume loop's to report), or the stop's token fired.
            await running.WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (running.IsCompleted)
            {
                return true;
            }

            // Aborted. Cancelled here too: this wait's own callback may have run first and brought us here on the same
            // thread, so leaving the block would unregister the callback above before it ran.
            await aborting.CancelAsync().ConfigureAwait(false);
        }

        await running.WaitAsync(AbandonGrace, timeProvider, CancellationToken.None).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        return running.IsCompleted;
    }
}
