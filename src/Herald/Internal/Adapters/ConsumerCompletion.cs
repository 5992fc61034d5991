namespace Herald.Internal;

/// <summary>Builds a consumer's <see cref="IConsumerCompletion.Completion"/> from its running loop, so every transport tells it alike.</summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class ConsumerCompletion
{
    /// <summary>
    /// Completes when <paramref name="running"/> ends: successfully when <paramref name="stopping"/> was cancelled (a stop);
    /// otherwise faulted, with what <paramref name="fault"/> returns or the loop's own exception as the reason.
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
            return;
        }

        throw fault?.Invoke() ?? failure ?? new InvalidOperationException("The consume loop ended without being stopped.");
    }
}
