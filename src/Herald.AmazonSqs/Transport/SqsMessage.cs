using Herald.Internal;
using Herald.Messages;

namespace Herald.AmazonSqs.Transport;

/// <summary>A received SQS message under its receipt handle (the lease), with what Herald carried on the copy.</summary>
internal sealed class SqsMessage(Envelope envelope, string receiptHandle, DateTimeOffset receivedAt, TimeSpan visibility, SqsEnvelopeCodec.Carried carried, Exception? decodeFailure)
    : LeasedMessage(envelope, decodeFailure)
{
    private long _visibleUntil = (receivedAt + visibility).UtcTicks;

    /// <summary>The handle every settlement of this receive goes through; a later receive of the message gets another.</summary>
    public string ReceiptHandle { get; } = receiptHandle;

    /// <summary>When this receive returned (the visibility limit of 12 hours counts from here; SQS counts from a response's latency earlier, within <see cref="AmazonSqsTransport.VisibilityMargin"/>).</summary>
    public DateTimeOffset ReceivedAt { get; } = receivedAt;

    /// <summary>Until when (UTC ticks) the message is known to stay hidden under this receipt: the receive's visibility, then each renewal that landed.</summary>
    public long VisibleUntil
    {
        get => Interlocked.Read(ref _visibleUntil);
        set => Interlocked.Exchange(ref _visibleUntil, value);
    }

    /// <summary>What Herald carried on the copy (attempts before it, a due time, a dead-letter reason).</summary>
    public SqsEnvelopeCodec.Carried Carried { get; } = carried;

    /// <summary>
    /// Set once a settlement's copy (a nack's or a dead letter's) was sent: a retry of the settlement, after the delete of
    /// this message failed, only deletes, rather than send a second copy.
    /// </summary>
    public bool CopySent { get; set; }
}
