namespace Herald.Internal;

/// <summary>Builds a consumer's <see cref="IConsumerCompletion.Completion"/> from its running loop, so every transport tells it alike.</summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class ConsumerCompletion
{
    /// <summary>
    /// Completes when <paramref name="running"/> ends: successfully when <paramref name="stopping"/> was cancelled (a stop)
    /// and the loop failed with nothing but a cancellation; otherwise faulted, with what <paramref name="fault"/> returns or
    /// the loop's own exception as the reason (a loop that failed on its own is reported even when a stop came meanwhile).
    /// </summary>
    public static async Task WhenEndedAsync(Task running, CancellationToken stopping, Func<Exception?>? fault = null)
    {
        ArgumentNullException.ThrowIfNull(running);
        Exception? failure = null;
        try
        {
            await running.ConfigureAwait(false);
        }
#pragma warning disable CA1031 // The reason is handed on as this task's fault.
        catch (Exception e)
#pragma warning restore CA1031
        {
            failure = e;
        }

        if (stopping.IsCancellationRequested)
        {
            // Seen after the loop's end, so the stop may have come just after a failure of the loop's own: only the stop's
            // cancellation (or no failure at all) is a stop.
            if ((fault?.Invoke() ?? (failure is OperationCanceledException ? null : failure)) is { } reason)
            {
                throw reason;
            }

            return;
        }

        throw fault?.Invoke() ?? failure ?? new InvalidOperationException("The consume loop ended without being stopped.");
    }
}
