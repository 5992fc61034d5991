using Herald.Messages;
using Herald.Transport;
using NATS.Client.JetStream;

namespace Herald.Nats.Transport;

/// <summary>One JetStream message as a Herald delivery; its consumer carries out the settlements.</summary>
internal sealed class NatsDelivery(NatsConsumer consumer, INatsJSMsg<byte[]> message, Envelope envelope, Exception? decodeFailure, int delivered, ulong streamSequence)
    : Delivery(envelope, consumer.Queue, decodeFailure)
{
    public INatsJSMsg<byte[]> Message { get; } = message;

    /// <summary>The server's count of deliveries of this message, deferrals of a delayed send included (read once: the metadata is parsed on each read).</summary>
    public int Delivered { get; } = delivered;

    public ulong StreamSequence { get; } = streamSequence;

    // The consumer's list of unsettled deliveries runs through these (guarded by its lock; Tracked also read without).
    internal NatsDelivery? Previous;
    internal NatsDelivery? Next;
    internal bool Tracked;

    protected override ValueTask OnAckAsync(CancellationToken cancellationToken) => consumer.AckAsync(this, cancellationToken);

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) => consumer.NakAsync(this, delay, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) =>
        consumer.DeadLetterAsync(this, reason, headers: null, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        consumer.DeadLetterAsync(this, reason, headers, cancellationToken);
}
