using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Internal;

/// <summary>How a <see cref="LeasedQueueConsumer{TMessage}"/> runs over its backend: lease timing and what differs between engines.</summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed record LeasedQueueSettings
{
    /// <summary>How long a claim or renewal holds a message; the consumer renews every third of it while it holds any.</summary>
    public required TimeSpan LeaseDuration { get; init; }

    /// <summary>How long the fetch loop sleeps when nothing was claimable and nothing woke it (zero for a backend that long-polls).</summary>
    public required TimeSpan PollInterval { get; init; }

    /// <summary>The most messages one claim may take (Amazon SQS: 10); by default no limit beyond the consumer's free room.</summary>
    public int MaxClaim { get; init; } = int.MaxValue;

    /// <summary>
    /// True: while workers still have buffered messages, claim again only once half of the room is free, so a busy consumer
    /// claims in batches (one round trip per many messages) rather than once per settled message. False: claim whenever a
    /// slot is free (a cheap, in-process claim).
    /// </summary>
    public bool ClaimsInBatches { get; init; }

    /// <summary>
    /// True: a buffered message is started only while at least a third of its lease is known to be left (no renewal overdue);
    /// otherwise it is handed back, as its lease may have run out and another consumer may hold it.
    /// </summary>
    public bool StartsOnlyUnderASafeLease { get; init; }

    /// <summary>
    /// True: a nack or dead letter is not sent once the message's lease is known to have run out (or a renewal found it
    /// lost); it is logged as a lost lease instead, and the message comes back. For an engine that applies a stale claim's
    /// settlement to whichever claim holds the message now (SQS honours an old receipt handle), so it would release, or
    /// copy and delete, another consumer's delivery. An ack is still sent: the message was handled.
    /// </summary>
    public bool SettlesOnlyUnderItsLease { get; init; }

    /// <summary>
    /// True: a claim being settled or handed back is renewed until that statement returns, so its lease does not run out
    /// while the settlement waits (for a connection of a full pool, for a lock) and another consumer does not handle the
    /// message again. For an engine whose renewal extends only a message still held under its claim, which every settlement
    /// ends, so a renewal landing after the settlement cannot undo it. False: the claim leaves the renewals first, and a
    /// renewal in flight lands before the settlement is sent (an SQS renewal landing after a nack would replace its delay).
    /// </summary>
    public bool RenewsUntilSettled { get; init; }

    /// <summary>The clock of leases, delays and polling.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Where the consumer logs (the adapter's category).</summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;

    /// <summary>How logs name the consumer, e.g. <c>PostgreSQL queue 'orders' in schema 'herald' (owner ...)</c>.</summary>
    public required string Name { get; init; }

    /// <summary>Throws when the settings are impossible.</summary>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(LeaseDuration, TimeSpan.Zero, nameof(LeaseDuration));
        ArgumentOutOfRangeException.ThrowIfLessThan(PollInterval, TimeSpan.Zero, nameof(PollInterval));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxClaim, 1, nameof(MaxClaim));
        ArgumentNullException.ThrowIfNull(TimeProvider, nameof(TimeProvider));
        ArgumentNullException.ThrowIfNull(Logger, nameof(Logger));
        ArgumentException.ThrowIfNullOrEmpty(Name, nameof(Name));
    }
}
