using System.Globalization;
using Herald.Messages;

namespace Herald.Conformance.Transport;

/// <summary>One delivery a conformance test's handler saw: the envelope, where it came from, who got it and when.</summary>
/// <param name="Envelope">The delivered envelope.</param>
/// <param name="Queue">The queue it was delivered from.</param>
/// <param name="Consumer">The test's name for the consumer that got it.</param>
/// <param name="ReceivedAt">When the handler saw it, on the clock the transport runs on.</param>
/// <param name="Index">Arrival order within its collector, from 0.</param>
public sealed record CollectedDelivery(Envelope Envelope, string Queue, string Consumer, DateTimeOffset ReceivedAt, int Index)
{
    /// <summary>A one-line description for failure messages.</summary>
    public override string ToString() => string.Create(
        CultureInfo.InvariantCulture,
        $"#{Index} queue={Queue} consumer={Consumer} type={Envelope.MessageType} id={Envelope.MessageId:N} seq={Envelope.GetHeader(TransportConformance.SequenceHeader) ?? "-"} key={Envelope.PartitionKey ?? "-"} attempt={Envelope.DeliveryAttempt} at={ReceivedAt:HH:mm:ss.fff}");
}
