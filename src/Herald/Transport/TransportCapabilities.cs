namespace Herald.Transport;

/// <summary>What a transport guarantees beyond the common contract; conformance tests and the runtime read these.</summary>
public sealed record TransportCapabilities
{
    /// <summary>Messages survive a restart of the process (and of the broker, where there is one).</summary>
    public bool IsDurable { get; init; }

    /// <summary><see cref="SendOptions.Delay"/> and delayed nacks are honoured by the transport itself.</summary>
    public bool SupportsDelayedDelivery { get; init; }

    /// <summary>Within one consumer, messages with the same partition key are handled one at a time in send order.</summary>
    public bool PreservesOrderPerPartitionKey { get; init; }

    /// <summary>The transport keeps dead-lettered messages itself (a dead-letter queue or exchange).</summary>
    public bool SupportsNativeDeadLetter { get; init; }

    /// <summary>Largest body the transport accepts, in bytes; larger messages are refused before they are sent.</summary>
    public int MaxMessageBytes { get; init; } = int.MaxValue;
}
