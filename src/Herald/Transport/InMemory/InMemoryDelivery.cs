using Herald.Messages;

namespace Herald.Transport.InMemory;

internal sealed class InMemoryDelivery(Envelope envelope, InMemoryQueue queue) : Delivery(envelope, queue.Name)
{
    protected override ValueTask OnAckAsync(CancellationToken cancellationToken)
    {
        queue.Complete();
        return ValueTask.CompletedTask;
    }

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        queue.Redeliver(Envelope, delay);
        return ValueTask.CompletedTask;
    }

    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken)
    {
        queue.DeadLetter(Envelope, reason);
        return ValueTask.CompletedTask;
    }

    protected override ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
    {
        queue.Redeliver(Envelope.WithHeaders(headers), delay);
        return ValueTask.CompletedTask;
    }

    protected override ValueTask OnDeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
    {
        queue.DeadLetter(Envelope.WithHeaders(headers), reason);
        return ValueTask.CompletedTask;
    }
}
