using Herald.Internal;
using Herald.Persistence;
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

        if (UnitOfWorkLeases.Of(context.UnitOfWork) is not { } leases)
        {
            return await next.InvokeAsync(consumption, context).ConfigureAwait(false);
        }

        // The mark lives outside the unit of work's transaction (Redis) and is held by a lease: losing it while the
        // handlers run cancels them, and the commit confirms it first (UnitOfWorkStep), so the work is not applied twice.
        var original = context.CancellationToken;
        var tokens = new CancellationToken[leases.Length + 1];
        tokens[0] = original;
        for (var i = 0; i < leases.Length; i++)
        {
            tokens[i + 1] = leases[i].Token;
        }

        using var linked = CancellationTokenSource.CreateLinkedTokenSource(tokens);
        context.CancellationToken = linked.Token;
        try
        {
            return await next.InvokeAsync(consumption, context).ConfigureAwait(false);
        }
        catch (OperationCanceledException cancelled) when (!original.IsCancellationRequested && leases.Any(l => l.IsLost))
        {
            throw new LeaseLostException($"The inbox mark of message {context.Envelope.MessageId} at '{context.Endpoint}' was lost while its handlers ran; they were cancelled and their work is rolled back. ({cancelled.Message})");
        }
        finally
        {
            context.CancellationToken = original;
        }
    }
}
