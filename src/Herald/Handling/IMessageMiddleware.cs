namespace Herald.Handling;

/// <summary>The next step of the consuming pipeline.</summary>
public delegate ValueTask MessageHandlerDelegate(MessageContext context);

/// <summary>
/// A step around handler invocation (logging, unit of work, authorization...). Middleware are singletons;
/// per-message services come from <see cref="MessageContext.Services"/>.
/// </summary>
public interface IMessageMiddleware
{
    /// <summary>Runs the step; call <paramref name="next"/> to continue, or throw to fail the attempt.</summary>
    ValueTask InvokeAsync(MessageContext context, MessageHandlerDelegate next);
}
