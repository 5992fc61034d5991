namespace Herald.Internal;

/// <summary>
/// One caller's piece of work waiting in a <see cref="GroupCommitter{TItem}"/>: it carries the caller's token and its
/// completion. An extension point for adapter packages, not for application code.
/// </summary>
public interface IGroupCommitItem
{
    /// <summary>The caller's token: honoured while the item waits in the queue, not once its group runs.</summary>
    CancellationToken CancellationToken { get; }

    /// <summary>What the item counts against <see cref="GroupCommitOptions.MaxWeight"/> (events, bytes; 0 when no budget applies).</summary>
    long Weight { get; }

    /// <summary>What the item counts against <see cref="GroupCommitOptions.MaxBytes"/>, a second budget (0, the default, when none applies).</summary>
    long Bytes => 0;

    /// <summary>Completes the caller as cancelled: the item was taken from the queue after its token was cancelled and never ran.</summary>
    void Cancel();

    /// <summary>Completes the caller with <paramref name="exception"/>; does nothing when the caller already has its outcome.</summary>
    void Fail(Exception exception);
}
