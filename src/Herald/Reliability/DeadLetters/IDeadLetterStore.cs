using Herald.Persistence;

namespace Herald.Reliability.DeadLetters;

/// <summary>
/// The port that keeps dead letters (one conformance suite, <c>DeadLetterStoreConformance</c>, defines it). Contract:
/// <list type="bullet">
/// <item>Every field of <see cref="DeadLetter"/> round-trips, the envelope unchanged (headers, body bytes, every attribute);
/// times at least to the millisecond.</item>
/// <item>Adding an id that exists already changes nothing (a redelivered write is harmless), and says so: the add reports
/// whether it added the record, so a caller counts each dead letter once.</item>
/// <item>Listing and deleting many honour every filter of <see cref="DeadLetterQuery"/>, go in id order and take at most
/// <see cref="DeadLetterQuery.Limit"/>; <see cref="DeadLetterQuery.After"/> continues after the given id.</item>
/// <item>A delete in a unit of work commits with its other writes or not at all, and fails the commit when the dead letter is
/// gone by then, so two units of work deleting one dead letter never both commit.</item>
/// <item>A write that returned is durable (for durable stores); a failed write throws, so the caller can keep the message.</item>
/// </list>
/// </summary>
public interface IDeadLetterStore
{
    /// <summary>Stores a dead letter; an existing id is left as it is. True when it was added, false when its id was held already.</summary>
    ValueTask<bool> AddAsync(DeadLetter deadLetter, CancellationToken cancellationToken = default);

    /// <summary>
    /// Stores a dead letter when <paramref name="unitOfWork"/> commits, together with its other writes. Whether it was added is
    /// known only then: after the commit, <paramref name="added"/> is called with true when it was, false when its id was held
    /// already; it is not called when the unit of work rolls back (nothing was added).
    /// </summary>
    ValueTask AddAsync(DeadLetter deadLetter, IUnitOfWork unitOfWork, Action<bool>? added = null, CancellationToken cancellationToken = default);

    /// <summary>Returns one dead letter, or null when there is none with that id.</summary>
    ValueTask<DeadLetter?> GetAsync(Guid id, CancellationToken cancellationToken = default);

    /// <summary>Returns the matching dead letters in id order, after <see cref="DeadLetterQuery.After"/>, at most <see cref="DeadLetterQuery.Limit"/>.</summary>
    ValueTask<IReadOnlyList<DeadLetter>> ListAsync(DeadLetterQuery query, CancellationToken cancellationToken = default);

    /// <summary>Counts the matching dead letters (every filter applies, <see cref="DeadLetterQuery.Limit"/> does not).</summary>
    ValueTask<long> CountAsync(DeadLetterQuery query, CancellationToken cancellationToken = default);

    /// <summary>Deletes one dead letter; false when there was none with that id.</summary>
    ValueTask<bool> DeleteAsync(Guid id, CancellationToken cancellationToken = default);

    /// <summary>
    /// Deletes one dead letter with <paramref name="unitOfWork"/>'s commit, together with its other writes, or not at all: when
    /// it is gone by then (a concurrent retry or a purge deleted it), the commit throws <see cref="DeadLetterNotFoundException"/>
    /// and writes nothing. A rollback keeps it. A database deletes the row in the open transaction (PostgreSQL: at once, so a
    /// concurrent delete of it waits for this unit of work to end), so of two units of work deleting one dead letter one commits.
    /// </summary>
    ValueTask DeleteAsync(Guid id, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default);

    /// <summary>Deletes exactly the dead letters <see cref="ListAsync"/> would return for the query (so at most its limit) and returns how many.</summary>
    ValueTask<int> DeleteManyAsync(DeadLetterQuery query, CancellationToken cancellationToken = default);

    /// <summary>
    /// Records a failed retry: adds 1 to <see cref="DeadLetter.RetryCount"/> and sets <see cref="DeadLetter.LastRetryError"/> and
    /// <see cref="DeadLetter.LastRetryTime"/>, leaving the original error as it was; false when there is no such id.
    /// </summary>
    ValueTask<bool> RecordRetryFailureAsync(Guid id, string error, DateTimeOffset time, CancellationToken cancellationToken = default);
}
