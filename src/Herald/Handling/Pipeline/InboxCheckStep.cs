using Herald.Reliability.Inbox;

namespace Herald.Handling.Pipeline;

/// <summary>
/// The inbox: marks the message handled in the attempt's unit of work (so the mark commits with the handlers' writes), or
/// finds it handled already and rolls back, so the delivery is acked without running the handlers.
/// </summary>
internal sealed class InboxCheckStep(InboxStep inbox, AttemptStep next) : AttemptStep
{
    public override async ValueTask<bool> InvokeAsync(Consumption consumption, MessageContext context)
    {
        if (!await inbox.TryEnterAsync(context).ConfigureAwait(false))
        {
            await context.UnitOfWork.RollbackAsync(context.CancellationToken).ConfigureAwait(false);
            return false;
        }

        return await next.InvokeAsync(consumption, context).ConfigureAwait(false);
    }
}
