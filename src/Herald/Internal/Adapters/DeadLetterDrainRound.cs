using System.Runtime.ExceptionServices;
using Herald.Transport;

namespace Herald.Internal;

/// <summary>
/// The one rule of an <see cref="INativeDeadLetterSource"/> for a dead letter its move fails on: the source leaves it
/// where it is and goes on with the next (so it does not hold back those behind it), and throws the first failure once
/// the round is over; a cancelled round stops at once.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class DeadLetterDrainRound
{
    private ExceptionDispatchInfo? _firstFailure;

    /// <summary>
    /// Hands <paramref name="deadLetter"/> to <paramref name="moveAsync"/>: true when it returned (remove the dead letter),
    /// false when it threw (leave it, go on). Throws when <paramref name="cancellationToken"/> is cancelled.
    /// </summary>
    public async ValueTask<bool> TryMoveAsync(Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, NativeDeadLetter deadLetter, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(moveAsync);
        try
        {
            await moveAsync(deadLetter, cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            _firstFailure ??= ExceptionDispatchInfo.Capture(e);
            return false;
        }
    }

    /// <summary>At the end of the round: throws the first failure of a move, if there was one.</summary>
    public void ThrowIfAnyFailed() => _firstFailure?.Throw();
}
