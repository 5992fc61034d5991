using Microsoft.Extensions.DependencyInjection;

namespace Herald.Handling;

/// <summary>Calls every handler registered for one message type, in registration order.</summary>
internal abstract class HandlerInvoker
{
    public abstract IReadOnlyList<Type> HandlerTypes { get; }

    public abstract ValueTask InvokeAsync(MessageContext context, IServiceProvider root);

    public static HandlerInvoker Create(Type messageType, IReadOnlyList<HandlerRegistration> registrations, IServiceCollection? services = null)
    {
        var invokerType = typeof(HandlerInvoker<>).MakeGenericType(messageType);
        return (HandlerInvoker)Activator.CreateInstance(invokerType, registrations, services)!;
    }
}

internal sealed class HandlerInvoker<TMessage> : HandlerInvoker
    where TMessage : notnull
{
    private readonly HandlerRegistration[] _registrations;
    private readonly IMessageHandler<TMessage>?[] _singletons;
    private readonly ObjectFactory?[] _rootFactories;

    public HandlerInvoker(IReadOnlyList<HandlerRegistration> registrations)
        : this(registrations, null)
    {
    }

    public HandlerInvoker(IReadOnlyList<HandlerRegistration> registrations, IServiceCollection? services)
    {
        _registrations = [.. registrations];
        _singletons = new IMessageHandler<TMessage>?[_registrations.Length];
        _rootFactories = [.. _registrations.Select(r => r.Lifetime == ServiceLifetime.Singleton ? null : RootActivation.TryCreate(r.HandlerType, services))];
    }

    public override IReadOnlyList<Type> HandlerTypes => [.. _registrations.Select(r => r.HandlerType)];

    public override async ValueTask InvokeAsync(MessageContext context, IServiceProvider root)
    {
        var message = (TMessage)context.Message;
        for (var i = 0; i < _registrations.Length; i++)
        {
            var registration = _registrations[i];

            // Singleton handlers come from the root once, so a message needs no scope unless a handler asks for one.
            var handler = registration.Lifetime == ServiceLifetime.Singleton
                ? _singletons[i] ??= (IMessageHandler<TMessage>)root.GetRequiredService(registration.HandlerType)
                : _rootFactories[i] is { } factory
                    ? (IMessageHandler<TMessage>)factory(root, null)
                    : (IMessageHandler<TMessage>)context.Services.GetRequiredService(registration.HandlerType);
            await handler.HandleAsync(message, context, context.CancellationToken).ConfigureAwait(false);
        }
    }
}
