namespace Herald.Internal;

/// <summary>How many messages of a leased queue are in each state, from <see cref="ILeasedQueueBackend{TMessage}.CountAsync"/>.</summary>
/// <param name="Ready">Visible and not leased: a consumer can claim them now.</param>
/// <param name="Leased">Claimed by a consumer whose lease has not run out (being handled).</param>
/// <param name="Delayed">Not visible yet (a delayed send or a retry's back-off).</param>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public readonly record struct QueueDepth(long Ready, long Leased, long Delayed);
