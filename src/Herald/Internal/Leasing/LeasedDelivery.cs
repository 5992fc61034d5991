using Herald.Transport;

namespace Herald.Internal;

/// <summary>A claimed message as the pipeline sees it; settling it goes through its consumer, under the consumer's lease.</summary>
internal sealed class LeasedDelivery<TMessage>(TMessage message, string queue, LeasedQueueConsumer<TMessage> consumer)
    : Delivery(message.Envelope, queue, message.DecodeFailure)
    where TMessage : LeasedMessage
{
    // The callers' tokens are not passed on: see LeasedQueueConsumer.SettleAsync.
    protected override ValueTask OnAckAsync(CancellationToken cancellationToken) =>
        consumer.SettleAsync(message, LeasedSettlement.Ack, TimeSpan.Zero, headers: null, reason: null);

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) =>
        consumer.SettleAsync(message, LeasedSettlement.Nack, delay, headers: null, reason: null);

    protected override ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
    {
        // The stored message is what is delivered again: its headers are rewritten with the nack, so the next delivery
        // carries them (the first failure's time, say) whichever consumer or process claims it.
        return consumer.SettleAsync(message, LeasedSettlement.Nack, delay, Envelope.WithHeaders(headers).Headers, reason: null);
    }

    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) =>
        consumer.SettleAsync(message, LeasedSettlement.DeadLetter, TimeSpan.Zero, headers: null, reason);

    // The pipeline's fallback while the dead-letter store is unreachable: the record travels in the headers, so the drain
    // stores it later as it was (its id, cause, error and first failure), not rebuilt from the reason alone.
    protected override ValueTask OnDeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        consumer.SettleAsync(message, LeasedSettlement.DeadLetter, TimeSpan.Zero, Envelope.WithHeaders(headers).Headers, reason);
}

/// <summary>How a leased message was settled.</summary>
internal enum LeasedSettlement
{
    Ack,
    Nack,
    DeadLetter,
}
