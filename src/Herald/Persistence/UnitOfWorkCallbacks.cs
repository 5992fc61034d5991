using System.Runtime.ExceptionServices;

namespace Herald.Persistence;

/// <summary>How every engine's unit of work runs its commit or rollback callbacks (the contract on <see cref="IUnitOfWork"/>).</summary>
internal static class UnitOfWorkCallbacks
{
    /// <summary>
    /// Runs every callback in registration order, also after one threw: a later one may end an in-memory inbox mark or wake
    /// the outbox relay. Then throws what failed: one failure as is, several in an <see cref="AggregateException"/> in order,
    /// <paramref name="commitFailure"/> (the failed commit the rollback callbacks follow) first; when only the commit failed,
    /// it returns and the caller rethrows that failure itself. Allocates nothing unless a callback fails.
    /// </summary>
    public static async ValueTask RunAsync(List<Func<CancellationToken, ValueTask>>? callbacks, CancellationToken cancellationToken, Exception? commitFailure = null)
    {
        if (callbacks is null)
        {
            return;
        }

        List<Exception>? failures = null;
        foreach (var callback in callbacks)
        {
            try
            {
                await callback(cancellationToken).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // Every failure is rethrown below, once the other callbacks ran.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                (failures ??= commitFailure is null ? [] : [commitFailure]).Add(ex);
            }
        }

        if (failures is null)
        {
            return;
        }

        // A cancelled token fails every callback that honours it: one cause, reported as the cancellation it is.
        if (failures.Count == 1 || failures.TrueForAll(static f => f is OperationCanceledException))
        {
            ExceptionDispatchInfo.Throw(failures[0]);
        }

        throw new AggregateException(failures);
    }
}
