using Herald.Messages;

namespace Herald.Internal;

/// <summary>A message a consumer claimed from a SQL queue: its row id (the key for settling it) and the envelope, with the delivery attempt set.</summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class QueuedMessage(long id, Envelope envelope, Exception? decodeFailure = null) : LeasedMessage(envelope, decodeFailure)
{
    /// <summary>The row id.</summary>
    public long Id => id;

    /// <summary>The row's attempts as this claim left them: with the owner, what tells this claim from any later one.</summary>
    public long Attempts => Envelope.DeliveryAttempt - 1L;
}

/// <summary>A message a SQL queue dead-lettered natively: the envelope as last delivered, where from, why and when.</summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class QueueDeadLetter(Envelope envelope, string queue, string reason, DateTimeOffset time)
{
    /// <summary>The envelope as last delivered.</summary>
    public Envelope Envelope => envelope;

    /// <summary>The queue it was dead-lettered from.</summary>
    public string Queue => queue;

    /// <summary>Why it was dead-lettered.</summary>
    public string Reason => reason;

    /// <summary>When it was dead-lettered.</summary>
    public DateTimeOffset Time => time;
}
