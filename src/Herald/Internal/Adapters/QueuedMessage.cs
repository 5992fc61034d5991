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

/// <summary>
/// A message a SQL queue dead-lettered natively: its row there, the envelope as last delivered, where from, why and when.
/// Read like a claimed message, so a row whose envelope does not decode still comes back, with its <see cref="DecodeFailure"/>.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class QueueDeadLetter(QueuedMessage row, string queue, string reason, DateTimeOffset time)
{
    /// <summary>The row id in the queue's dead-letter table.</summary>
    public long Id => row.Id;

    /// <summary>The envelope as last delivered (what could be read of it when <see cref="DecodeFailure"/> is set).</summary>
    public Envelope Envelope => row.Envelope;

    /// <summary>Why the row's envelope could not be read, or null.</summary>
    public Exception? DecodeFailure => row.DecodeFailure;

    /// <summary>The queue it was dead-lettered from.</summary>
    public string Queue => queue;

    /// <summary>Why it was dead-lettered.</summary>
    public string Reason => reason;

    /// <summary>When it was dead-lettered.</summary>
    public DateTimeOffset Time => time;
}
