namespace Herald.Internal;

/// <summary>What one claim of a leased-queue backend took, until when it holds them, and when the queue next has something due.</summary>
/// <typeparam name="TMessage">The backend's claimed message.</typeparam>
/// <param name="Messages">The messages claimed, in the order to hand them out.</param>
/// <param name="LeaseUntil">When the leases this claim took run out (on the backend's clock, the one the consumer is given).</param>
/// <param name="NextVisibleAt">When the next delayed message becomes claimable, if the backend knows; null: wait for a wake-up or the poll interval.</param>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed record LeasedClaim<TMessage>(IReadOnlyList<TMessage> Messages, DateTimeOffset LeaseUntil, DateTimeOffset? NextVisibleAt)
    where TMessage : LeasedMessage;
