using Herald.Persistence;
namespace Herald.Reliability.Outbox;

/// <summary>
/// The port that holds outgoing messages until the relay has sent them (one conformance suite,
/// <c>OutboxStoreConformance</c>, defines it). Contract:
/// <list type="bullet">
/// <item><see cref="AddAsync"/> with a unit of work writes in its transaction: the rows become visible to
/// <see cref="FetchPendingAsync"/> only when it commits, and never when it rolls back (stores without transactions add
/// them from <see cref="IUnitOfWork.OnCommitted"/>). Without one, all rows are written at once, atomically.</item>
/// <item><see cref="FetchPendingAsync"/> returns unsent messages in the order they were added (across calls, and in list
/// order within one call), oldest first, at most <c>maxCount</c>. It does not lease them: one relay runs per store
/// (the relay leads through <see cref="Herald.Persistence.ILeaderElection"/>), and a crash between send and <see cref="MarkSentAsync"/> sends a message
/// again (at least once; the receiving inbox drops the duplicate).</item>
/// <item>Given a due time, <see cref="FetchPendingAsync"/> skips a message whose <see cref="OutboxMessage.NextAttemptAt"/>
/// is later, and every later message with its partition key (so a message that backs off keeps its key's order and
/// does not hold back any other row). <see cref="RecordFailedAttemptAsync"/> counts a failed send and sets that time.</item>
/// <item><see cref="MarkSentAsync"/> keeps the first sent time; unknown ids are ignored. <see cref="DeleteSentAsync"/>
/// never deletes a pending message.</item>
/// <item>Every field of <see cref="OutboxMessage"/> round-trips, the envelope unchanged; times at least to the millisecond.</item>
/// </list>
/// </summary>
public interface IOutboxStore
{
    /// <summary>Adds messages, in the unit of work's transaction when one is given.</summary>
    ValueTask AddAsync(IReadOnlyList<OutboxMessage> messages, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Returns at most <paramref name="maxCount"/> unsent messages, oldest first, in the order they were added; with
    /// <paramref name="dueBy"/>, only those due by then (see the contract above).
    /// </summary>
    ValueTask<IReadOnlyList<OutboxMessage>> FetchPendingAsync(int maxCount, DateTimeOffset? dueBy = null, CancellationToken cancellationToken = default);

    /// <summary>Counts one more failed send of a pending message and holds it back until <paramref name="nextAttemptAt"/>; unknown or sent ids are ignored.</summary>
    ValueTask RecordFailedAttemptAsync(Guid id, DateTimeOffset nextAttemptAt, CancellationToken cancellationToken = default);

    /// <summary>Marks messages sent at <paramref name="sentAt"/>; already sent ones keep their first time.</summary>
    ValueTask MarkSentAsync(IReadOnlyCollection<Guid> ids, DateTimeOffset sentAt, CancellationToken cancellationToken = default);

    /// <summary>Deletes at most <paramref name="maxCount"/> messages sent before <paramref name="sentBefore"/>; returns how many.</summary>
    ValueTask<int> DeleteSentAsync(DateTimeOffset sentBefore, int maxCount, CancellationToken cancellationToken = default);

    /// <summary>Counts the unsent messages (the outbox backlog).</summary>
    ValueTask<long> CountPendingAsync(CancellationToken cancellationToken = default);

    /// <summary>Returns one message, pending or sent, or null when there is none with that id.</summary>
    ValueTask<OutboxMessage?> GetAsync(Guid id, CancellationToken cancellationToken = default);
}
