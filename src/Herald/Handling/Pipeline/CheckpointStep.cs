using Herald.EventSourcing;

namespace Herald.Handling.Pipeline;

/// <summary>
/// A subscription's checkpoint, written in the attempt's unit of work after its handlers: their writes and the position
/// commit together or not at all, so an event's effects are applied exactly once per committed checkpoint.
/// </summary>
internal sealed class CheckpointStep(string subscriptionId, ICheckpointStore checkpoints, AttemptStep next) : AttemptStep
{
    public override async ValueTask<bool> InvokeAsync(Consumption consumption, MessageContext context)
    {
        if (!await next.InvokeAsync(consumption, context).ConfigureAwait(false))
        {
            return false;
        }

        var position = ((RecordedEventDelivery)consumption.Delivery).Position;
        await checkpoints.SetCheckpointAsync(subscriptionId, position, context.UnitOfWork, context.CancellationToken).ConfigureAwait(false);
        return true;
    }
}
