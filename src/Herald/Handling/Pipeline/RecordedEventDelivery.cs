using Herald.Messages;
using Herald.Transport;

namespace Herald.Handling.Pipeline;

/// <summary>
/// A stored event handed to an endpoint's chain by a subscription. Acking it completes it; a nack asks the subscription to
/// run it again after the delay, in process (there is no queue to hand it back to).
/// </summary>
internal sealed class RecordedEventDelivery(Envelope envelope, string endpoint, string subscriptionId, string stream, long position) : Delivery(envelope, endpoint)
{
    /// <summary>The subscription that read it (a projection's checkpoint id, which names its generation), as its dead letter records.</summary>
    public string SubscriptionId => subscriptionId;

    /// <summary>The stream the event belongs to.</summary>
    public string Stream => stream;

    /// <summary>Its position in the global log, which becomes the subscription's checkpoint.</summary>
    public long Position => position;

    /// <summary>Set when the chain nacked it: run it again after this delay.</summary>
    public TimeSpan? RedeliveryDelay { get; private set; }

    /// <summary>The headers the next run carries (the first-failure time), when the nack set any.</summary>
    public IReadOnlyDictionary<string, string>? RedeliveryHeaders { get; private set; }

    /// <summary>Set when the chain refused it as a write of a retired read-model generation: the subscription stops on it.</summary>
    public Exception? Retired { get; set; }

    protected override ValueTask OnAckAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        RedeliveryDelay = delay;
        return ValueTask.CompletedTask;
    }

    protected override ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
    {
        RedeliveryHeaders = headers;
        return OnNackAsync(delay, cancellationToken);
    }

    // A subscription's chain is built without native dead letters, and a stored event is never undecodable by a transport.
    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) =>
        throw new NotSupportedException($"A stored event has no native dead letters; the subscription '{Queue}' dead-letters through the store only.");
}
