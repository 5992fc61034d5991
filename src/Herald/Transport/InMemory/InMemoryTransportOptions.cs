namespace Herald.Transport.InMemory;

/// <summary>Limits of the <see cref="InMemoryTransport"/>.</summary>
public sealed record InMemoryTransportOptions
{
    /// <summary>The defaults: 10,000 messages per queue, 10,000 dead letters per queue, no size limit.</summary>
    public static InMemoryTransportOptions Default { get; } = new();

    /// <summary>Most messages one queue holds (ready, delayed and in flight); senders wait for room beyond it.</summary>
    public int QueueCapacity { get; init; } = 10_000;

    /// <summary>Most dead letters kept per queue; dead-lettering beyond it fails and the message stays in the queue.</summary>
    public int DeadLetterCapacity { get; init; } = 10_000;

    /// <summary>Largest body accepted, in bytes.</summary>
    public int MaxMessageBytes { get; init; } = int.MaxValue;
}
