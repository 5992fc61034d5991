using Herald.Diagnostics;
using Herald.Transport;

namespace Herald.Reliability.DeadLetters;

/// <summary>
/// The retry of an endpoint's dead letter: its envelope, unchanged but for a fresh delivery count (and without the failure
/// headers of its earlier attempts), sent back to the endpoint's queue, or published to its topic when it was to be published.
/// </summary>
internal sealed class TransportRetryTarget(ITransport transport, TimeProvider timeProvider) : IDeadLetterRetryTarget
{
    public DeadLetterOrigin Origin => DeadLetterOrigin.Endpoint;

    public async ValueTask<bool> RetryAsync(DeadLetter deadLetter, CancellationToken cancellationToken)
    {
        var envelope = deadLetter.Envelope;

        // A message dead-lettered before it was due (a saga timeout, a scheduled message) still waits for its due time.
        var options = DeadLetterHeaders.RemainingDelay(envelope, timeProvider.GetUtcNow()) is { } delay ? new SendOptions { Delay = delay } : null;

        // A message that was to be published (an outbox topic row, a stored event) goes to the topic's subscribers, not to a queue of its name.
        var topic = DeadLetterHeaders.Topic(envelope);

        // A delay past the transport's limit is refused as the outbox relay refuses it, with that reason on the dead letter.
        SendChecks.Validate(transport.Capabilities, topic ?? deadLetter.Endpoint, envelope, options?.Delay);
        var retry = DeadLetterHeaders.ForRetry(envelope, timeProvider.GetUtcNow()) with { DeliveryAttempt = 0 };
        if (topic is not null)
        {
            await transport.PublishAsync(topic, retry, options, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await transport.SendAsync(deadLetter.Endpoint, retry, options, cancellationToken).ConfigureAwait(false);
        }

        HeraldDiagnostics.Published(topic ?? deadLetter.Endpoint, retry);

        // A send cannot share a transaction with the dead letters: the manager deletes it after (the endpoint's inbox absorbs
        // the duplicate a second retry would send, should that delete fail).
        return false;
    }
}
