using Herald.Messages;

namespace Herald.Internal;

/// <summary>
/// Reads what it can of a stored message that failed to decode, so the dead letter keeps its id, type and body where those
/// are intact: each part is read on its own, and a part that fails too takes its fallback.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class Salvage
{
    /// <summary>The envelope of an undecodable message: each part as its reader returns it, or empty when that reader throws too.</summary>
    /// <param name="deliveryAttempt">Which delivery this is.</param>
    /// <param name="now">The time to record when the message's own time cannot be read.</param>
    /// <param name="messageId">Reads the message id.</param>
    /// <param name="messageType">Reads the message type.</param>
    /// <param name="time">Reads when the message was created.</param>
    /// <param name="partitionKey">Reads the partition key (so the next message of its key is woken once this one is settled).</param>
    /// <param name="body">Reads the body bytes.</param>
    public static Envelope Envelope(
        int deliveryAttempt,
        DateTimeOffset now,
        Func<Guid> messageId,
        Func<string> messageType,
        Func<DateTimeOffset> time,
        Func<string?> partitionKey,
        Func<byte[]> body) => new()
    {
        MessageId = Read(messageId, Guid.Empty),
        // A reader may hand back null for a NULL column: the envelope's type is never null, or the chain could not even tag it (issue 10).
        MessageType = Read(messageType, "") ?? "",
        Time = Read(time, now),
        PartitionKey = Read(partitionKey, null),
        Body = Read(body, []) ?? [],
        DeliveryAttempt = deliveryAttempt,
    };

    /// <summary>One part of a broken message: what <paramref name="read"/> returns, or <paramref name="fallback"/> when it throws.</summary>
    public static T Read<T>(Func<T> read, T fallback)
    {
        ArgumentNullException.ThrowIfNull(read);
        try
        {
            return read();
        }
#pragma warning disable CA1031 // The message is already known to be broken; any failure here only loses one more part of it.
        catch (Exception)
#pragma warning restore CA1031
        {
            return fallback;
        }
    }
}
