using Herald.Handling;

namespace Herald.Testing.Internal;

/// <summary>The first middleware of the host: notes that the handlers ran and what each failed attempt threw.</summary>
internal sealed class ObservingMiddleware : IMessageMiddleware
{
    public async ValueTask InvokeAsync(MessageContext context, MessageHandlerDelegate next)
    {
        var delivery = DeliveryObservation.Current;
        if (delivery is not null)
        {
            delivery.HandlersRan = true;
        }

        try
        {
            await next(context).ConfigureAwait(false);
        }
        catch (Exception ex) when (delivery is not null)
        {
            delivery.Failed(ex);
            throw;
        }
    }
}
