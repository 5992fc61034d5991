using Herald.Diagnostics;
using Herald.Hosting;
using Herald.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Handling.Pipeline;

/// <summary>
/// Carries out what the steps after it decided: ack a handled message or a duplicate; nack one to redeliver, its
/// first-failure time in a header; dead-letter one to the store, then ack. If the store fails, it goes to the transport's
/// own dead letters with its record in headers (drained into the store later), and only if that fails too is it
/// redelivered, never lost. Dead-letter alerting is only signalled from here and runs in the background.
/// Once the chain has its verdict, the settlement runs with no cancellation token: the handler's token fires at the host's
/// shutdown deadline, and a handler that finished after it has done its work, which a dropped ack would have the broker
/// deliver again. Only the dead-letter store's write still honours the token (nothing is settled when it is cut short).
/// A dead letter of a chain that is not an endpoint's (a projection's, a subscription's) names its <paramref name="origin"/>
/// and where its event is stored, so a retry takes it back there.
/// </summary>
internal sealed class SettleStep(
    string endpoint,
    DeadLetterOrigin origin,
    IDeadLetterStore deadLetters,
    DeadLetterMonitor? monitor,
    TimeSpan storeFailureRedeliveryDelay,
    bool nativeDeadLetters,
    TimeProvider timeProvider,
    ILogger logger,
    ConsumeStep next) : ConsumeStep
{
    public override async ValueTask<ConsumeOutcome> InvokeAsync(Consumption consumption)
    {
        var outcome = await next.InvokeAsync(consumption).ConfigureAwait(false);
        var delivery = consumption.Delivery;
        switch (outcome.Verdict)
        {
            case ConsumeVerdict.Duplicate:
                // Counted as a duplicate only: its handling was counted as processed when it committed, and its handlers did
                // not run again (a redelivery after a lost ack must not count the message twice).
                Log.DuplicateSkipped(logger, consumption.Envelope.MessageId, consumption.Envelope.MessageType, endpoint);
                await delivery.AckAsync(CancellationToken.None).ConfigureAwait(false);
                HeraldDiagnostics.MessagesDuplicate.Add(1, consumption.Tags(endpoint));
                break;
            case ConsumeVerdict.Handled:
                await delivery.AckAsync(CancellationToken.None).ConfigureAwait(false);
                HeraldDiagnostics.MessagesProcessed.Add(1, consumption.Tags(endpoint));
                break;
            case ConsumeVerdict.Redeliver:
                await delivery.NackAsync(outcome.Delay, DeadLetterHeaders.ForRedelivery(outcome.FirstFailure!.Value), CancellationToken.None).ConfigureAwait(false);
                break;
            default:
                await DeadLetterAsync(consumption, outcome).ConfigureAwait(false);
                break;
        }

        return outcome;
    }

    internal static string DescribeFailure(Exception exception) => $"{exception.GetType().Name}: {exception.Message}";

    private async ValueTask DeadLetterAsync(Consumption consumption, ConsumeOutcome outcome)
    {
        var delivery = consumption.Delivery;
        var cancellationToken = consumption.CancellationToken;
        var exception = outcome.Failure!;
        // The envelope as delivered, not as upcast: a dead letter keeps the message unchanged, to be retried as it came.
        var envelope = delivery.Envelope;
        var now = timeProvider.GetUtcNow();
        var recorded = delivery as RecordedEventDelivery;
        var deadLetter = FailureRecords.Create(
            // A delivery that did not decode has an id the sender's bytes made up (two different broken messages may claim
            // one): its dead letter's id is derived from its body too, and only from a version 7 id (the method says why).
            // A stored event's is derived from its subscription (a projection's generation, which a rebuild replays the event
            // into apart): the failure of each generation is a dead letter of its own, retried into that generation.
            delivery.DecodeFailure is null
                ? DeadLetterHeaders.PipelineDeadLetterId(recorded?.SubscriptionId ?? endpoint, envelope, now)
                : DeadLetterHeaders.UndecodableDeadLetterId(recorded?.SubscriptionId ?? endpoint, envelope, now),
            DeadLetterHeaders.WithOrigin(envelope, origin, recorded?.Stream, recorded?.Position, recorded?.SubscriptionId),
            endpoint,
            outcome.Cause,
            exception,
            outcome.FirstFailure ?? DeadLetterHeaders.FirstFailure(envelope, now) ?? now,
            now,
            outcome.Attempt);

        // The record first, the ack second: a crash in between redelivers the message, it is never lost (and its dead letter
        // again has the same id, so the store keeps it once, and it is counted once: only the add that stored it counts).
        bool added;
        try
        {
            added = await deadLetters.AddAsync(deadLetter, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception storeFailure) when (storeFailure is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Log.DeadLetterStoreFailed(logger, storeFailure, envelope.MessageId, envelope.MessageType, endpoint);
            if (!await TryNativeDeadLetterAsync(delivery, deadLetter).ConfigureAwait(false))
            {
                return;
            }

            // In the transport's dead letters now, which the drain moves to the store without counting them again.
            added = true;
        }

        Log.DeadLettered(logger, exception, envelope.MessageId, envelope.MessageType, outcome.Attempt, endpoint, $"{outcome.Cause}: {DescribeFailure(exception)}");
        await delivery.AckAsync(CancellationToken.None).ConfigureAwait(false);
        if (added)
        {
            DeadLetterMonitor.Added(monitor, endpoint, consumption.TypeTag);
        }
    }

    /// <summary>
    /// The fallback while the store is unreachable: the transport's own dead letters, the record in headers, so the drain
    /// can store it later. False when the message was handed back for redelivery instead (no native dead letters the
    /// drain can read, or they failed too).
    /// </summary>
    private async ValueTask<bool> TryNativeDeadLetterAsync(Delivery delivery, DeadLetter deadLetter)
    {
        var envelope = delivery.Envelope;
        if (!nativeDeadLetters)
        {
            Log.NativeDeadLetterFailed(logger, null, envelope.MessageId, envelope.MessageType, endpoint, storeFailureRedeliveryDelay);
            await delivery.NackAsync(storeFailureRedeliveryDelay, DeadLetterHeaders.ForRedelivery(deadLetter.FirstFailureTime), CancellationToken.None).ConfigureAwait(false);
            return false;
        }

        try
        {
            await delivery.DeadLetterAsync(deadLetter.ErrorMessage, DeadLetterHeaders.For(deadLetter), CancellationToken.None).ConfigureAwait(false);
            return true;
        }
        catch (Exception ex)
        {
            // The delivery counts as settled now; the transport handed it back when the move failed.
            Log.NativeDeadLetterFailed(logger, ex, envelope.MessageId, envelope.MessageType, endpoint, delivery.HandBackDelayAfterFailedSettle);
            return false;
        }
    }
}
