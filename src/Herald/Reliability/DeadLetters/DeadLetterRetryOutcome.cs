namespace Herald.Reliability.DeadLetters;

/// <summary>What became of one dead letter's retry.</summary>
public enum DeadLetterRetryOutcome
{
    /// <summary>Taken back where it came from (sent to its endpoint, applied to its projection) and deleted from the dead letters.</summary>
    Retried,

    /// <summary>
    /// No dead letter has that id (already retried or purged), this manager is retrying it already, or another retry took a
    /// projection's dead letter back while this one ran (this one wrote nothing).
    /// </summary>
    NotFound,

    /// <summary>The send (or the projection's apply) failed: the dead letter stays, its retry count and last retry error updated.</summary>
    Failed,

    /// <summary>
    /// Its origin cannot take it back (a stream processor's, an event subscription's, a projection's on a host that does not
    /// register it): nothing was done, and the dead letter stays, with the reason as its last retry error.
    /// </summary>
    Refused,
}

/// <summary>The result of retrying every dead letter matching a query.</summary>
/// <param name="Succeeded">How many were taken back and deleted.</param>
/// <param name="Failed">How many could not be sent or applied (they stay, with their retry count raised).</param>
public sealed record DeadLetterRetryResult(int Succeeded, int Failed)
{
    /// <summary>How many were refused, their origin being unable to take them back (they stay, with the reason as their last retry error).</summary>
    public int Refused { get; init; }
}
