using System.Diagnostics;
using Herald.Diagnostics;
using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Messages;
using Herald.Projections;
using Herald.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Retry;
using Herald.Sagas;
using Microsoft.Extensions.Logging;

namespace Herald.Handling.Pipeline;

/// <summary>
/// Runs attempts under the retry policy: a failed attempt runs again at once, is redelivered after a delay, or is
/// dead-lettered. Attempts count as documented on <see cref="RetryPolicy"/>: the first delivery holds attempt 1 and the
/// immediate retries; every redelivery (counted by the transport) is one more attempt. An optimistic version conflict
/// (a saga instance or a stream another message changed meanwhile) is not a failure of the message: it runs again at once
/// against the fresh state, up to <see cref="MaxConflictRetries"/> times per delivery, without spending an attempt.
/// Every run after the first is handed the message read again from the body, as a redelivery is.
/// </summary>
internal sealed class RetryStep(string endpoint, RetryPolicies retries, IMessageSerializer serializer, TimeProvider timeProvider, ILogger logger, UnitOfWorkStep attempts) : ConsumeStep
{
    /// <summary>Version conflicts a delivery retries outside its attempts; past them, each conflict counts as a failed attempt.</summary>
    internal const int MaxConflictRetries = 100;

    public override async ValueTask<ConsumeOutcome> InvokeAsync(Consumption consumption)
    {
        var envelope = consumption.Envelope;
        var cancellationToken = consumption.CancellationToken;
        var policy = retries.Get(endpoint, consumption.Type!.ClrType);
        var delivered = Math.Max(1, envelope.DeliveryAttempt);
        var attempt = delivered == 1 ? 1 : policy.ImmediateRetries + delivered;
        DateTimeOffset? firstFailure = null;
        var conflicts = 0;
        var rerun = false;
        while (true)
        {
            Exception failure;
            try
            {
                if (rerun)
                {
                    // The failed run's writes were rolled back, but not what its handlers changed in the message object.
                    consumption.Message = serializer.Deserialize(consumption.Envelope.Body, consumption.Type!.ClrType);
                }

                rerun = true;
                return await attempts.RunAsync(consumption, attempt).ConfigureAwait(false) ? ConsumeOutcome.Handled : ConsumeOutcome.Duplicate;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                // Shutdown cancelled the handler: not a failure; the transport hands the message back unchanged.
                throw;
            }
            catch (CheckpointConflictException conflict)
            {
                // Another runner of this subscription applied the event first (a leadership handover overlapped): this
                // attempt wrote nothing, and running it again would apply it twice. Acked like a duplicate.
                Log.ProjectionCheckpointConflict(logger, conflict.SubscriptionId, conflict.Position);
                return ConsumeOutcome.Duplicate;
            }
            catch (HeraldException conflict) when (conflict is SagaConcurrencyException or ConcurrencyException && conflicts < MaxConflictRetries)
            {
                // Each conflict means another message committed, so the system progresses; the message itself is fine and
                // must not be dead-lettered for losing races under load. Yielding lets the winner finish before the reload.
                conflicts++;
                Log.RetryingAfterConflict(logger, envelope.MessageId, envelope.MessageType, conflicts, endpoint, conflict.Message);
                HeraldDiagnostics.MessagesRetried.Add(1, [.. consumption.Tags(endpoint), new(MetricNames.RetryKindTag, "conflict")]);
                cancellationToken.ThrowIfCancellationRequested();
                await Task.Yield();
                continue;
            }
            catch (ReadModelGenerationRetiredException) when (consumption.Delivery is RecordedEventDelivery)
            {
                // A projection runner that a rebuild left behind: this attempt wrote nothing, and no retry can succeed.
                // Its subscription stops here, and the runner starts again on the generation that serves.
                throw;
            }
#pragma warning disable CA1031 // Any handler failure is settled (retry, redelivery or dead letter); the consumer loop goes on.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                failure = ex;
            }

            HeraldDiagnostics.MessagesFailed.Add(1, consumption.Tags(endpoint));
            HeraldDiagnostics.Failed(consumption.Activity, failure);
            // Carried by the message itself (set on its first redelivery), so any node that dead-letters it knows it.
            firstFailure ??= DeadLetterHeaders.FirstFailure(envelope, timeProvider.GetUtcNow()) ?? timeProvider.GetUtcNow();
            var decision = policy.Decide(failure, attempt, Random.Shared);
            switch (decision.Action)
            {
                case RetryAction.RetryImmediately:
                    Log.RetryingImmediately(logger, failure, envelope.MessageId, envelope.MessageType, attempt, endpoint);
                    HeraldDiagnostics.MessagesRetried.Add(1, [.. consumption.Tags(endpoint), new(MetricNames.RetryKindTag, "immediate")]);
                    cancellationToken.ThrowIfCancellationRequested();
                    attempt++;
                    continue;
                case RetryAction.Redeliver when consumption.Delivery.IsLastDelivery:
                    // The transport would not deliver it again: dead-lettered now, with this failure, not by the transport
                    // without it.
                    return ConsumeOutcome.DeadLetter(failure, DeadLetterCause.RetriesExhausted, attempt, firstFailure);
                case RetryAction.Redeliver:
                    Log.HandlerFailedWillRetry(logger, failure, envelope.MessageId, envelope.MessageType, attempt, endpoint, decision.Delay);
                    HeraldDiagnostics.MessagesRetried.Add(1, [.. consumption.Tags(endpoint), new(MetricNames.RetryKindTag, "delayed")]);
                    return ConsumeOutcome.Redeliver(decision.Delay, firstFailure.Value);
                default:
                    var cause = policy.IsNeverRetried(failure) ? DeadLetterCause.NotRetryable : DeadLetterCause.RetriesExhausted;
                    return ConsumeOutcome.DeadLetter(failure, cause, attempt, firstFailure);
            }
        }
    }
}
