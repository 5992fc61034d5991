namespace Herald.Transport;

/// <summary>What a transport guarantees beyond the common contract; conformance tests and the runtime read these.</summary>
public sealed record TransportCapabilities
{
    /// <summary>Messages survive a restart of the process (and of the broker, where there is one).</summary>
    public bool IsDurable { get; init; }

    /// <summary><see cref="SendOptions.Delay"/> and delayed nacks are honoured by the transport itself.</summary>
    public bool SupportsDelayedDelivery { get; init; }

    /// <summary>
    /// Within one consumer, messages with the same partition key are handled one at a time in send order. A message nacked
    /// with a delay is the exception: the later messages of its key may go first while it waits (see each transport's docs).
    /// </summary>
    public bool PreservesOrderPerPartitionKey { get; init; }

    /// <summary>The transport keeps dead-lettered messages itself (a dead-letter queue or exchange).</summary>
    public bool SupportsNativeDeadLetter { get; init; }

    /// <summary>Largest body the transport accepts, in bytes; larger messages are refused before they are sent.</summary>
    public int MaxMessageBytes { get; init; } = int.MaxValue;

    /// <summary>Longest queue or topic name the transport accepts, in UTF-8 bytes (255 for AMQP).</summary>
    public int MaxNameBytes { get; init; } = int.MaxValue;

    /// <summary>Longest <see cref="SendOptions.Delay"/> (and delayed nack) the transport can hold.</summary>
    public TimeSpan MaxDelay { get; init; } = TimeSpan.MaxValue;

    /// <summary>
    /// Tells whether a send failure will recur on every retry (such as a topology conflict), so the outbox dead-letters the
    /// message instead of retrying it; null when the transport knows none beyond Herald's own (see <see cref="MessageRejectedException"/>).
    /// </summary>
    public Func<Exception, bool>? IsPermanentSendFailure { get; init; }
}
