namespace Herald.Handling.Pipeline;

/// <summary>The last step: the middleware, in the order they were added, around the message type's handlers.</summary>
internal sealed class HandlerStep : AttemptStep
{
    private readonly MessageHandlerDelegate _pipeline;

    public HandlerStep(IReadOnlyList<IMessageMiddleware> middleware, IServiceProvider services)
    {
        // Built once per endpoint: a message pays for no closure.
        MessageHandlerDelegate next = context => context.Invoker!.InvokeAsync(context, services);
        for (var i = middleware.Count - 1; i >= 0; i--)
        {
            var step = middleware[i];
            var following = next;
            next = context => step.InvokeAsync(context, following);
        }

        _pipeline = next;
    }

    public override async ValueTask<bool> InvokeAsync(Consumption consumption, MessageContext context)
    {
        await _pipeline(context).ConfigureAwait(false);
        return true;
    }
}
