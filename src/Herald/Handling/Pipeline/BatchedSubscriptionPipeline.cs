using System.Diagnostics;
using Herald.Diagnostics;
using Herald.EventSourcing;
using Herald.EventSourcing.Upcasting;
using Herald.Internal;
using Herald.Messages;
using Herald.Persistence;
using Herald.Projections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Herald.Handling.Pipeline;

/// <summary>
/// Applies a run of a subscription's events in one DI scope and one unit of work: each event is decoded, upcast and
/// deserialized by the chain's own steps, its handlers run in order, the checkpoint is written once and the unit of work
/// commits once. When anything fails (a decode, a handler, the checkpoint, the commit), the whole batch is rolled back and
/// its events run again one by one through the subscription's chain, which retries, dead-letters and checkpoints each as it
/// always does; the next batch is batched again.
/// </summary>
internal sealed class BatchedSubscriptionPipeline(
    string endpoint,
    MessageTypeRegistry registry,
    EventUpcasterRegistry? upcasters,
    ConsumeStep decode,
    AttemptStep handlers,
    Func<long, long, IUnitOfWork, CancellationToken, ValueTask> checkpoint,
    SubscriptionPipeline single,
    IServiceProvider services,
    IMessageBus bus,
    bool useOutbox,
    UserTrust userTrust,
    ILogger logger)
{
    /// <summary>Applies <paramref name="events"/>; true when their batch committed with the checkpoint of the last one.</summary>
    public async ValueTask<bool> HandleAsync(IReadOnlyList<RecordedEvent> events, CancellationToken cancellationToken)
    {
        if (events.Count == 1)
        {
            await single.HandleAsync(events[0], cancellationToken).ConfigureAwait(false);
            return false;
        }

        try
        {
            await ApplyAsync(events, cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopped in the middle: nothing of the batch is kept, and the checkpoint stays before it.
            throw;
        }
        catch (CheckpointConflictException conflict)
        {
            // Another runner applied some of these events first; one by one, the chain skips those and applies the rest.
            Hosting.Log.ProjectionCheckpointConflict(logger, conflict.SubscriptionId, conflict.Position);
        }
#pragma warning disable CA1031 // Any failure of a batch is handled by running its events one by one, which settles each.
        catch (Exception ex) when (ex is not ReadModelGenerationRetiredException)
#pragma warning restore CA1031
        {
            Hosting.Log.BatchFailed(logger, ex, endpoint, events.Count, events[0].Position, events[^1].Position);
        }

        // One by one, an event dead-lettered or skipped stores no checkpoint: the subscription's own save covers it.
        foreach (var recorded in events)
        {
            await single.HandleAsync(recorded, cancellationToken).ConfigureAwait(false);
        }

        return false;
    }

    private async ValueTask ApplyAsync(IReadOnlyList<RecordedEvent> events, CancellationToken cancellationToken)
    {
        using var activity = HeraldDiagnostics.ActivitySource.HasListeners()
            ? HeraldDiagnostics.ActivitySource.StartActivity("process batch " + endpoint, ActivityKind.Consumer, parentContext: default, links: Links(events))
            : null;
        activity?.SetTag("messaging.batch.message_count", events.Count);
        var started = Stopwatch.GetTimestamp();
        var applied = new Consumption[events.Count];
        var contexts = new MessageContext?[events.Count];
        var scope = services.CreateAsyncScope();
        await using (scope.ConfigureAwait(false))
        {
            IUnitOfWork? unitOfWork = null;
            try
            {
                for (var i = 0; i < events.Count; i++)
                {
                    var consumption = await DecodeAsync(events[i], cancellationToken).ConfigureAwait(false);
                    var context = new MessageContext(consumption.Envelope, consumption.Message!, endpoint, services, bus, cancellationToken)
                    {
                        Consumption = consumption,
                        UseOutbox = useOutbox,
                    };

                    // Every event of the batch shares the scope, so they share its unit of work; each is the ambient
                    // context while its handlers run (the metadata of what they store names it as the cause).
                    contexts[i] = context;
                    context.UseScope(scope);
                    UnitOfWorkRunner.Enter(context);
                    context.UserId = await userTrust.ResolveAsync(consumption.Envelope, cancellationToken).ConfigureAwait(false);
                    unitOfWork = context.UnitOfWork;
                    if (!await handlers.InvokeAsync(consumption, context).ConfigureAwait(false))
                    {
                        throw new InvalidOperationException($"Event {consumption.Envelope.MessageId} of batch on '{endpoint}' was found handled already.");
                    }

                    UnitOfWorkRunner.ThrowIfDoomed(context);
                    applied[i] = consumption;
                }

                await checkpoint(events[0].Position, events[^1].Position, unitOfWork!, cancellationToken).ConfigureAwait(false);
                await UnitOfWorkRunner.CommitAsync(unitOfWork!, cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                if (unitOfWork is not null)
                {
                    await UnitOfWorkRunner.RollbackQuietlyAsync(unitOfWork, logger).ConfigureAwait(false);
                }

                activity?.SetStatus(ActivityStatusCode.Error);
                throw;
            }
            finally
            {
                // Each context ends with the batch, as an attempt's does: work its handlers left running no longer joins
                // its unit of work (over, its scope disposed just below) but runs in one of its own.
                foreach (var context in contexts)
                {
                    context?.End();
                }
            }
        }

        // Every event of the batch was settled by its commit, so each took the batch's time (one by one, TraceStep records it).
        var elapsed = Stopwatch.GetElapsedTime(started).TotalSeconds;
        foreach (var consumption in applied)
        {
            var tags = consumption.Tags(endpoint);
            HeraldDiagnostics.MessagesProcessed.Add(1, tags);
            HeraldDiagnostics.ProcessingDuration.Record(elapsed, tags);
        }
    }

    // A batch has as many parents as the saves that stored its events: each one's trace is linked (OpenTelemetry's batch
    // processing), so the request or message that stored an event leads to the work that applied it. Events of one save
    // are side by side and share their trace context, so a repeat of the previous one adds no link.
    private static List<ActivityLink>? Links(IReadOnlyList<RecordedEvent> events)
    {
        List<ActivityLink>? links = null;
        var previous = default(ActivityContext);
        for (var i = 0; i < events.Count; i++)
        {
            var context = TraceContext.Extract(events[i].Envelope);
            if (context != default && context != previous)
            {
                (links ??= new List<ActivityLink>(events.Count)).Add(new ActivityLink(context));
                previous = context;
            }
        }

        return links;
    }

    // The chain's decoding steps on one event; a poison event fails the batch, and the chain dead-letters it on its own run.
    private async ValueTask<Consumption> DecodeAsync(RecordedEvent recorded, CancellationToken cancellationToken)
    {
        var consumption = new Consumption { IsTrial = true };
        consumption.Start(new RecordedEventDelivery(recorded.Envelope with { DeliveryAttempt = 1 }, endpoint, single.SubscriptionId, recorded.Stream, recorded.Position), cancellationToken);
        TraceStep.Identify(registry, upcasters, consumption);
        var outcome = await decode.InvokeAsync(consumption).ConfigureAwait(false);
        return outcome.Verdict == ConsumeVerdict.Handled
            ? consumption
            : throw new HeraldException($"Event {recorded.Envelope.MessageId} at position {recorded.Position} cannot be decoded ({outcome.Cause}): {outcome.Failure?.Message}", outcome.Failure);
    }
}
