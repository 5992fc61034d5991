namespace Herald.Reliability.Outbox;

/// <summary>Whether an outbox message goes to one queue or is published to a topic.</summary>
public enum OutboxDestinationKind
{
    /// <summary>Sent to one queue (<c>ITransport.SendAsync</c>).</summary>
    Queue,

    /// <summary>Published to a topic (<c>ITransport.PublishAsync</c>).</summary>
    Topic,
}
