using Herald.Persistence;
namespace Herald.Reliability.Inbox;

/// <summary>
/// The port that remembers which messages each consumer (endpoint) has handled, so redelivered duplicates are acked
/// without running handlers again (one conformance suite, <c>InboxConformance</c>, defines it). Contract:
/// <list type="bullet">
/// <item>Marks are per endpoint and message id; a mark expires <c>window</c> after it was made (time from the
/// store's <see cref="TimeProvider"/>, never a database clock), after which the same id can be marked again.</item>
/// <item>Of concurrent marks of one id at one endpoint, exactly one returns true.</item>
/// <item>With a unit of work, the mark is written in its transaction: it commits with the handler's writes and vanishes
/// with a rollback (stores without transactions undo it through <see cref="IUnitOfWork.OnRolledBack"/>). A mark of the
/// same id meanwhile waits for that unit of work: false after its commit, a mark of its own after its rollback.</item>
/// </list>
/// </summary>
public interface IInbox
{
    /// <summary>Marks the message handled at the endpoint for <paramref name="window"/>; false when a live mark exists (a duplicate).</summary>
    ValueTask<bool> TryMarkHandledAsync(string endpoint, Guid messageId, TimeSpan window, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default);

    /// <summary>True when the endpoint holds a live mark for the message.</summary>
    ValueTask<bool> IsHandledAsync(string endpoint, Guid messageId, CancellationToken cancellationToken = default);

    /// <summary>Deletes at most <paramref name="maxCount"/> expired marks and returns how many; call again until it returns less.</summary>
    ValueTask<int> DeleteExpiredAsync(int maxCount, CancellationToken cancellationToken = default);
}
