using Herald.Messages;

namespace Herald.Reliability.Outbox;

/// <summary>One message waiting in the outbox (or sent, until cleanup deletes it): where it goes and the envelope to send.</summary>
public sealed record OutboxMessage
{
    /// <summary>Id of the outbox row (a Guid v7).</summary>
    public required Guid Id { get; init; }

    /// <summary>Queue or topic.</summary>
    public required OutboxDestinationKind DestinationKind { get; init; }

    /// <summary>Name of the queue or topic.</summary>
    public required string Destination { get; init; }

    /// <summary>The message, exactly as it will be sent.</summary>
    public required Envelope Envelope { get; init; }

    /// <summary>When it was written to the outbox.</summary>
    public required DateTimeOffset CreatedAt { get; init; }

    /// <summary>Ordering key: the relay sends messages with the same key one after another, in the order they were added.</summary>
    public string? PartitionKey { get; init; }

    /// <summary>Deliver no earlier than this time (the relay asks the transport for the remaining delay); null for at once.</summary>
    public DateTimeOffset? DeliverAt { get; init; }

    /// <summary>When the relay sent it (or moved it to the dead letters); null while it is pending.</summary>
    public DateTimeOffset? SentAt { get; init; }

    /// <summary>How many sends of it failed so far; the relay dead-letters it at <see cref="OutboxOptions.MaxAttempts"/>.</summary>
    public int Attempts { get; init; }

    /// <summary>After a failed send, no earlier than this the relay tries it again (UTC); null when it may go at once.</summary>
    public DateTimeOffset? NextAttemptAt { get; init; }
}
