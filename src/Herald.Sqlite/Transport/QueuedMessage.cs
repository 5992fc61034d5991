using Herald.Internal;
using Herald.Messages;

namespace Herald.Sqlite.Transport;

/// <summary>A message a consumer claimed: its row id (the key for settling it) and the envelope, with the delivery attempt set.</summary>
internal sealed class QueuedMessage(long id, Envelope envelope, Exception? decodeFailure = null) : LeasedMessage(envelope, decodeFailure)
{
    public long Id => id;

    /// <summary>The row's attempts as this claim left them: with the owner, what tells this claim from any later one.</summary>
    public long Attempts => Envelope.DeliveryAttempt - 1L;
}

/// <summary>A message the queue dead-lettered: the envelope as last delivered, where from, why and when.</summary>
internal sealed record SqliteQueueDeadLetter(Envelope Envelope, string Queue, string Reason, DateTimeOffset Time);
