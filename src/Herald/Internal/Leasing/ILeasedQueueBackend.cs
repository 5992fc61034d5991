namespace Herald.Internal;

/// <summary>
/// One consumer's hold on a queue whose messages are leased (hidden from other consumers for a while) rather than held on a
/// connection: a SQL table with a lease column, or a broker with a visibility timeout (Amazon SQS: receive, change visibility,
/// delete). <see cref="LeasedQueueConsumer{TMessage}"/> runs the loops; the backend only talks to the engine. One instance
/// serves one consumer, so it holds that consumer's lease identity and knows everything it claimed and has not settled.
/// </summary>
/// <typeparam name="TMessage">The backend's claimed message.</typeparam>
/// <remarks>
/// An extension point for Herald's adapter packages, not for application code; it may change in any release. Settlements
/// act only under the claim that took the message (its owner and its claim, never a later claim of the same message) and
/// return false when that claim was lost, so a completion is refused rather than applied twice, and the consumer says so.
/// A backend wakes this process's consumers itself after a settlement that makes a message claimable.
/// </remarks>
public interface ILeasedQueueBackend<TMessage>
    where TMessage : LeasedMessage
{
    /// <summary>
    /// Completes at the next wake-up of this queue (a commit or notification that may have made a message claimable); taken
    /// before each claim, so none falls in between. A backend that waits inside <see cref="ClaimAsync"/> (a long poll) returns
    /// a task that never completes.
    /// </summary>
    Task NextWakeUp();

    /// <summary>
    /// Takes up to <paramref name="max"/> claimable messages under this consumer's lease. A message that cannot be decoded is
    /// returned with its <see cref="LeasedMessage.DecodeFailure"/>, never thrown or skipped.
    /// </summary>
    ValueTask<LeasedClaim<TMessage>> ClaimAsync(int max, CancellationToken cancellationToken);

    /// <summary>
    /// Extends, in one statement, the lease of each of <paramref name="held"/> and of nothing else this consumer's lease may
    /// still cover (a message whose settlement failed must come back when its lease runs out); returns when the renewed leases
    /// run out, and adds to <paramref name="lost"/> each of <paramref name="held"/> whose claim it no longer holds (another
    /// claim took the message, or it is gone). A lease that ran out but that no other claim took is still this claim's, and
    /// is renewed.
    /// </summary>
    /// <remarks>
    /// The consumer calls this from its own renewal thread and blocks there until it completes, so a renewal never queues
    /// behind handlers on the thread pool: a backend completes it synchronously where its client can, and bounds its waits
    /// for locks well below the lease (a renewal that fails is tried again soon, long before the lease runs out).
    /// </remarks>
    ValueTask<DateTimeOffset> RenewAsync(IReadOnlyCollection<TMessage> held, ICollection<TMessage> lost, CancellationToken cancellationToken);

    /// <summary>Removes the handled message; false when its lease was lost.</summary>
    ValueTask<bool> AckAsync(TMessage message, CancellationToken cancellationToken);

    /// <summary>
    /// Makes the message claimable again after <paramref name="delay"/>, counting the attempt; false when its lease was lost.
    /// When <paramref name="headers"/> is given, the redelivered message carries exactly those headers (the message's own with
    /// the nack's merged in, by the consumer); null keeps its headers unchanged.
    /// </summary>
    ValueTask<bool> NackAsync(TMessage message, TimeSpan delay, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken);

    /// <summary>
    /// Moves the message to the engine's dead letters with the reason; false when its lease was lost. When
    /// <paramref name="headers"/> is given, the dead letter carries exactly those headers (the message's own with the
    /// dead-letter record merged in, by the consumer, so the drain can store the record as it was); null keeps its headers.
    /// </summary>
    ValueTask<bool> DeadLetterAsync(TMessage message, string reason, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken);

    /// <summary>Hands back a message that was never started, unchanged and not counted as a delivery.</summary>
    ValueTask ReleaseAsync(TMessage message, CancellationToken cancellationToken);

    /// <summary>Hands back, unchanged, everything this consumer still holds (it is stopping).</summary>
    ValueTask ReleaseAllAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Counts the queue's messages by state for the <c>herald.queue.messages</c> gauge; null when the backend cannot (the
    /// gauge then reports nothing for the queue). Called in the background, never while a collection waits.
    /// </summary>
    ValueTask<QueueDepth?> CountAsync(CancellationToken cancellationToken) => new((QueueDepth?)null);
}
