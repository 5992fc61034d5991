using Herald.Messages;

namespace Herald.Transport;

/// <summary>One message from a transport's own dead letters, as an <see cref="INativeDeadLetterSource"/> reads it.</summary>
public sealed record NativeDeadLetter
{
    /// <summary>The message, headers included (Herald's dead-letter record travels in them when Herald put it there).</summary>
    public required Envelope Envelope { get; init; }

    /// <summary>The queue it was dead-lettered from.</summary>
    public required string Queue { get; init; }

    /// <summary>Why it was dead-lettered, when the transport keeps a reason besides the headers.</summary>
    public string? Reason { get; init; }

    /// <summary>When it was dead-lettered, when the transport knows.</summary>
    public DateTimeOffset? Time { get; init; }

    /// <summary>Why the transport could not decode it (then <see cref="Envelope"/> holds what could be read), or null.</summary>
    public Exception? DecodeFailure { get; init; }

    /// <summary>
    /// What identifies it in the transport each time it is read (say its dead-letter queue and message id), or null. One that
    /// carries no dead-letter id of Herald's is stored under an id derived from this, so reading it again after the store took
    /// it but before it was removed from the transport does not store it twice.
    /// </summary>
    public string? NativeId { get; init; }
}
