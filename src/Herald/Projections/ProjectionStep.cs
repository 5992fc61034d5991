using Herald.EventSourcing;
using Herald.Handling;
using Herald.Handling.Pipeline;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;

namespace Herald.Projections;

/// <summary>
/// The attempt step of an async projection's chain: hands the event's stream, position and generation to the handlers,
/// then writes the checkpoint in their unit of work. The stores refuse a checkpoint that does not move forward
/// (<see cref="CheckpointConflictException"/>), so when two runners overlap (a leadership handover) each event is applied by
/// one of them only.
/// </summary>
internal sealed class ProjectionStep(string checkpointId, int generation, ICheckpointStore checkpoints, AttemptStep next) : AttemptStep
{
    internal const string RunKey = "herald.projection.run";

    public override async ValueTask<bool> InvokeAsync(Consumption consumption, MessageContext context)
    {
        var delivery = Enter(consumption, context, generation);
        if (!await next.InvokeAsync(consumption, context).ConfigureAwait(false))
        {
            return false;
        }

        await checkpoints.SetCheckpointAsync(checkpointId, delivery.Position, context.UnitOfWork, context.CancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>
    /// The checkpoint of a batch, in its unit of work: first its first position, which fails (<see cref="CheckpointConflictException"/>)
    /// when another runner applied any event of the batch (it stored that event's position or a later one), then its last.
    /// </summary>
    internal static async ValueTask CheckpointBatchAsync(ICheckpointStore checkpoints, string checkpointId, long first, long last, IUnitOfWork unitOfWork, CancellationToken cancellationToken)
    {
        await checkpoints.SetCheckpointAsync(checkpointId, first, unitOfWork, cancellationToken).ConfigureAwait(false);
        if (last != first)
        {
            await checkpoints.SetCheckpointAsync(checkpointId, last, unitOfWork, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Tells the handlers of <paramref name="context"/> the event's stream, position and generation.</summary>
    internal static RecordedEventDelivery Enter(Consumption consumption, MessageContext context, int generation)
    {
        var delivery = (RecordedEventDelivery)consumption.Delivery;
        context.Items[RunKey] = new ProjectionRun(delivery.Stream, delivery.Position, generation);
        return delivery;
    }
}

/// <summary>
/// As <see cref="ProjectionStep"/>, but writes no checkpoint: the step of one event of a batch (the batch writes it once).
/// </summary>
internal sealed class ProjectionBatchStep(int generation, AttemptStep next) : AttemptStep
{
    public override ValueTask<bool> InvokeAsync(Consumption consumption, MessageContext context)
    {
        ProjectionStep.Enter(consumption, context, generation);
        return next.InvokeAsync(consumption, context);
    }
}

/// <summary>
/// The step of a dead letter's retry: as <see cref="ProjectionBatchStep"/> (no checkpoint: it is past the event already), then the dead letter deleted in the handlers' unit
/// of work, so the event is applied and the dead letter gone together, or neither (the commit fails when another retry took
/// the dead letter first).
/// </summary>
internal sealed class ProjectionRetryStep(int generation, IDeadLetterStore deadLetters, Guid deadLetterId, AttemptStep next) : AttemptStep
{
    public override async ValueTask<bool> InvokeAsync(Consumption consumption, MessageContext context)
    {
        ProjectionStep.Enter(consumption, context, generation);
        if (!await next.InvokeAsync(consumption, context).ConfigureAwait(false))
        {
            return false;
        }

        await deadLetters.DeleteAsync(deadLetterId, context.UnitOfWork, context.CancellationToken).ConfigureAwait(false);
        return true;
    }
}

/// <summary>What a projection's handler needs to know about the event in hand, beyond its envelope.</summary>
internal sealed record ProjectionRun(string Stream, long? Position, int Generation);

/// <summary>Calls a projection's handler for one event type, from the endpoint chain of the projection.</summary>
internal sealed class ProjectionInvoker(Projection projection, IReadModelStore store) : HandlerInvoker
{
    public override IReadOnlyList<Type> HandlerTypes => [projection.GetType()];

    /// <summary>The handlers of <paramref name="projection"/>'s chain: it, for each event type it handles.</summary>
    public static HandlerRegistry Handlers(Projection projection, IReadModelStore store) =>
        new(projection.EventTypes.ToDictionary(t => t, HandlerInvoker (_) => new ProjectionInvoker(projection, store)));

    public override async ValueTask InvokeAsync(MessageContext context, IServiceProvider root)
    {
        var run = (ProjectionRun)context.Items[ProjectionStep.RunKey]!;
        var projectionContext = new ProjectionContext(projection, store, context.Envelope, run, context.UnitOfWork, context.Services);
        await projection.ApplyAsync(context.Message, projectionContext, context.CancellationToken).ConfigureAwait(false);
    }
}
