namespace Herald.Reliability.DeadLetters;

/// <summary>What became of one dead letter's retry.</summary>
public enum DeadLetterRetryOutcome
{
    /// <summary>Sent back to its endpoint and deleted from the dead letters.</summary>
    Retried,

    /// <summary>No dead letter has that id (already retried or purged), or this manager is retrying it already.</summary>
    NotFound,

    /// <summary>The send failed: the dead letter stays, its retry count and last retry error updated.</summary>
    Failed,
}

/// <summary>The result of retrying every dead letter matching a query.</summary>
/// <param name="Succeeded">How many were sent back and deleted.</param>
/// <param name="Failed">How many could not be sent (they stay, with their retry count raised).</param>
public sealed record DeadLetterRetryResult(int Succeeded, int Failed);
