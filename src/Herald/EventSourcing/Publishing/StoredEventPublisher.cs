using Herald.Diagnostics;
using Herald.EventSourcing.Subscriptions;
using Herald.EventSourcing.Upcasting;
using Herald.Hosting;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.EventSourcing.Publishing;

/// <summary>
/// Publishes every stored event to the topic of its type, in global-log order, from a checkpointed catch-up
/// subscription: the store is the outbox, so an event is published if and only if its append committed (at least
/// once; consumers deduplicate by message id). The envelope published is the one recorded; one stored under a former type
/// name goes to the topic of its current name (the consumer's upcast step renames it). One node publishes at a time
/// (the leader of <c>$publish-stored-events:{subscription}</c>). A failure the transport
/// calls permanent (see <see cref="SendChecks"/>) moves the event to the dead letters, so it cannot stop the log.
/// </summary>
internal sealed class StoredEventPublisher(
    IEventStore store,
    ICheckpointStore checkpoints,
    ITransport transport,
    IDeadLetterStore deadLetters,
    Herald.Persistence.ILeaderElection election,
    TimeProvider timeProvider,
    IOptions<EventPublishingOptions> options,
    ILogger<StoredEventPublisher> logger,
    DeadLetterMonitor? monitor = null,
    EventUpcasterRegistry? upcasters = null) : BackgroundService
{
    // Every node shares the checkpoint, so one node publishes at a time: two would both read from it and publish each event
    // twice. Another node takes over when the leader stops or loses its lease.
    private static readonly TimeSpan LeadershipRetryInterval = TimeSpan.FromSeconds(5);

    private CancellationToken _leading;

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Herald.Persistence.LeaderElectionExtensions.RunWhileLeadingAsync(
            election,
            "$publish-stored-events:" + options.Value.SubscriptionId,
            PublishWhileLeadingAsync,
            LeadershipRetryInterval,
            timeProvider,
            logger,
            stoppingToken);

    private async Task PublishWhileLeadingAsync(CancellationToken leading)
    {
        var settings = options.Value;
        _leading = leading;
        var subscription = new EventSubscription(
            store,
            checkpoints,
            PublishAsync,
            new EventSubscriptionOptions { SubscriptionId = settings.SubscriptionId, Filter = upcasters?.Widen(settings.Filter) ?? settings.Filter })
        {
            Logger = logger,
        };
        await subscription.StartAsync(leading).ConfigureAwait(false);
        await using (subscription.ConfigureAwait(false))
        {
            try
            {
                // A subscription that failed (a checkpoint another leader moved, an upcaster) has stopped for good: its failure
                // goes to the leadership loop, which logs it, lets go and starts again, instead of holding the lead publishing nothing.
                await subscription.Completion.WaitAsync(leading).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (leading.IsCancellationRequested)
            {
                // Stopping, or no longer leading: the subscription stops where its checkpoint stands.
            }

            await subscription.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    private async ValueTask PublishAsync(RecordedEvent recorded, CancellationToken cancellationToken)
    {
        var settings = options.Value;
        var delay = settings.RetryDelay;
        var topic = upcasters?.CurrentName(recorded.EventType) ?? recorded.EventType;
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _leading);
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await transport.PublishAsync(topic, recorded.Envelope, options: null, linked.Token).ConfigureAwait(false);
                HeraldDiagnostics.Published(topic, recorded.Envelope);
                return;
            }
            catch (Exception ex) when (!linked.Token.IsCancellationRequested)
            {
                // A cancellation this publisher did not ask for (a client's own timeout) is a failed publish like any other.
                if (SendChecks.IsPermanent(ex, transport.Capabilities) && await TryDeadLetterAsync(recorded, topic, ex, attempt, linked.Token).ConfigureAwait(false))
                {
                    // Retrying cannot help: the event is kept in the dead letters (and in the store), and the log goes on.
                    return;
                }

                // Never skip a stored event: keep trying (the checkpoint stays before it) until the transport takes it.
                Log.StoredEventPublishFailed(logger, ex, recorded.EventType, recorded.Position, attempt, delay);
                await Task.Delay(delay, timeProvider, linked.Token).ConfigureAwait(false);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, settings.MaxRetryDelay.Ticks));
            }
        }
    }

    private async ValueTask<bool> TryDeadLetterAsync(RecordedEvent recorded, string topic, Exception exception, int attempt, CancellationToken cancellationToken)
    {
        var deadLetter = SendRejections.Create(recorded.Envelope, topic, topic: true, exception, timeProvider.GetUtcNow(), attempt);
        bool added;
        try
        {
            added = await deadLetters.AddAsync(deadLetter, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            // Not recorded: the event is published again after the back-off, like any other failure.
            Log.StoredEventDeadLetterFailed(logger, ex, recorded.EventType, recorded.Position);
            return false;
        }

        if (added)
        {
            DeadLetterMonitor.Added(monitor, deadLetter.Endpoint, recorded.EventType);
        }

        Log.StoredEventRejected(logger, exception, recorded.EventType, recorded.Position);
        return true;
    }
}
