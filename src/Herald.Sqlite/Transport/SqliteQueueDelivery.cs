using Herald.Sqlite.Internal;
using Herald.Transport;

namespace Herald.Sqlite.Transport;

/// <summary>A claimed message; settling it writes through the file's writer, guarded by the consumer's lease.</summary>
internal sealed class SqliteQueueDelivery(QueuedMessage message, string queue, SqliteQueueConsumer consumer)
    : Delivery(message.Envelope, queue)
{
    public QueuedMessage Message => message;

    protected override ValueTask OnAckAsync(CancellationToken cancellationToken) =>
        consumer.SettleAsync(message, static (q, m, owner, _) => q.Ack(m.Id, owner), "ack", cancellationToken);

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        var visibleAt = consumer.VisibleAfter(delay);
        return consumer.SettleAsync(message, (q, m, owner, _) => q.Nack(m.Id, owner, visibleAt), "nack", cancellationToken);
    }

    protected override ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
    {
        // The row is the message: its headers are rewritten with the nack, so the next delivery carries them.
        var merged = new Dictionary<string, string>(Envelope.Headers, StringComparer.Ordinal);
        foreach (var (name, value) in headers)
        {
            merged[name] = value;
        }

        var headersJson = EventRows.HeadersJson(merged);
        var visibleAt = consumer.VisibleAfter(delay);
        return consumer.SettleAsync(message, (q, m, owner, _) => q.Nack(m.Id, owner, visibleAt, headersJson), "nack", cancellationToken);
    }

    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) =>
        consumer.SettleAsync(message, (q, m, owner, now) => q.DeadLetter(m.Id, owner, reason, now), "dead-letter", cancellationToken);
}
