namespace Herald.EventSourcing;

/// <summary>
/// A checkpoint written in a unit of work would not move forward: another runner of the same subscription or projection
/// has stored a position at or past it. The unit of work's commit throws it and writes nothing, so an event applied by one
/// runner is never applied again by another; the subscription skips the event.
/// </summary>
public sealed class CheckpointConflictException : HeraldException
{
    /// <summary>Creates the exception for <paramref name="subscriptionId"/> at <paramref name="position"/>.</summary>
    public CheckpointConflictException(string subscriptionId, long position)
        : base($"The checkpoint of '{subscriptionId}' is already at or past position {position}: another runner applied it. This unit of work wrote nothing.")
    {
        SubscriptionId = subscriptionId;
        Position = position;
    }

    /// <summary>The subscription or projection.</summary>
    public string SubscriptionId { get; }

    /// <summary>The position this unit of work tried to store.</summary>
    public long Position { get; }
}
