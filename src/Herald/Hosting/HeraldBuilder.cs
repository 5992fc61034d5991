using System.Reflection;
using System.Text.Json;
using Herald.Cqrs;
using Herald.Cqrs.Validation;
using Herald.Handling;
using Herald.Messages;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Herald.Hosting;

/// <summary>Configures Herald inside <c>services.AddHerald(h => ...)</c>; every method returns the builder so calls chain.</summary>
public sealed partial class HeraldBuilder
{
    private static readonly Type[] RequestHandlerInterfaces = [typeof(ICommandHandler<>), typeof(ICommandHandler<,>), typeof(IQueryHandler<,>)];
    private readonly Dictionary<Type, Type> _requestHandlers = [];
    private readonly List<Action<JsonSerializerOptions>> _jsonSetup = [];

    internal HeraldBuilder(IServiceCollection services)
    {
        Services = services;
    }

    /// <summary>The service collection, for adapters' extension methods.</summary>
    public IServiceCollection Services { get; }

    /// <summary>The message type registry this host uses.</summary>
    public MessageTypeRegistry MessageTypes { get; } = new();

    internal List<HandlerRegistration> MessageHandlers { get; } = [];

    internal MessageRoutes Routes { get; } = new();

    /// <summary>Registers a message type by its <see cref="MessageTypeAttribute"/>.</summary>
    public HeraldBuilder AddMessageType<T>()
    {
        MessageTypes.Register<T>();
        return this;
    }

    /// <summary>Registers a message type under an explicit logical name (no attribute needed).</summary>
    public HeraldBuilder AddMessageType<T>(string name, int version = 1)
    {
        MessageTypes.Register<T>(name, version);
        return this;
    }

    /// <summary>Registers every type of the assembly that carries a <see cref="MessageTypeAttribute"/>.</summary>
    public HeraldBuilder AddMessageTypesFromAssembly(Assembly assembly)
    {
        MessageTypes.RegisterFromAssembly(assembly);
        return this;
    }

    /// <summary>
    /// Registers a handler class: message handlers (<see cref="IMessageHandler{TMessage}"/>), command and query
    /// handlers (exactly one per request type) and validators. Its message types are registered if they carry the attribute.
    /// </summary>
    public HeraldBuilder AddHandler<THandler>(ServiceLifetime lifetime = ServiceLifetime.Scoped)
        where THandler : class => AddHandler(typeof(THandler), lifetime);

    /// <summary>Registers a handler class; see <see cref="AddHandler{THandler}"/>.</summary>
    public HeraldBuilder AddHandler(Type handlerType, ServiceLifetime lifetime = ServiceLifetime.Scoped)
    {
        ArgumentNullException.ThrowIfNull(handlerType);
        if (!TryAddHandler(handlerType, lifetime))
        {
            throw new ArgumentException(
                $"'{handlerType.FullName}' implements none of IMessageHandler<T>, ICommandHandler<T>, ICommandHandler<T, TResult>, IQueryHandler<T, TResult> or IValidator<T>.",
                nameof(handlerType));
        }

        return this;
    }

    /// <summary>
    /// Registers every concrete handler and validator class of the assembly, and its message types; the optional
    /// filter limits the scan (for example to one namespace).
    /// </summary>
    public HeraldBuilder AddHandlersFromAssembly(Assembly assembly, ServiceLifetime lifetime = ServiceLifetime.Scoped, Func<Type, bool>? filter = null)
    {
        ArgumentNullException.ThrowIfNull(assembly);
        foreach (var type in assembly.GetTypes().Where(t => filter?.Invoke(t) ?? true))
        {
            if (type.GetCustomAttribute<MessageTypeAttribute>() is not null && !MessageTypes.TryGetByType(type, out _))
            {
                MessageTypes.Register(type);
            }

            if (type is { IsClass: true, IsAbstract: false, IsGenericTypeDefinition: false })
            {
                TryAddHandler(type, lifetime);
            }
        }

        return this;
    }

    /// <summary>Registers a validator class for the validation behaviour of the command and query buses.</summary>
    public HeraldBuilder AddValidator<TValidator>()
        where TValidator : class => AddHandler(typeof(TValidator), ServiceLifetime.Transient);

    /// <summary>Adds a pipeline behaviour around commands and queries: an open generic type or a closed one. Runs in registration order, after validation.</summary>
    public HeraldBuilder AddPipelineBehavior(Type behaviorType, ServiceLifetime lifetime = ServiceLifetime.Transient)
    {
        ArgumentNullException.ThrowIfNull(behaviorType);
        if (behaviorType.IsGenericTypeDefinition)
        {
            Services.Add(new ServiceDescriptor(typeof(IPipelineBehavior<,>), behaviorType, lifetime));
            return this;
        }

        var interfaces = Closed(behaviorType, typeof(IPipelineBehavior<,>)).ToList();
        if (interfaces.Count == 0)
        {
            throw new ArgumentException($"'{behaviorType.FullName}' does not implement IPipelineBehavior<TRequest, TResult>.", nameof(behaviorType));
        }

        foreach (var service in interfaces)
        {
            Services.Add(new ServiceDescriptor(service, behaviorType, lifetime));
        }

        return this;
    }

    /// <summary>Adds a middleware around message handlers; middleware run in the order they are added.</summary>
    public HeraldBuilder UseMiddleware<TMiddleware>()
        where TMiddleware : class, IMessageMiddleware
    {
        Services.AddSingleton<IMessageMiddleware, TMiddleware>();
        return this;
    }

    /// <summary>Uses the given transport (adapters call this from their own <c>UseXxx</c> extensions).</summary>
    public HeraldBuilder UseTransport(Func<IServiceProvider, ITransport> factory)
    {
        ArgumentNullException.ThrowIfNull(factory);
        Services.Replace(ServiceDescriptor.Singleton(factory));
        return this;
    }

    /// <summary>Uses the in-process transport (the default when no other is configured).</summary>
    public HeraldBuilder UseInMemoryTransport(InMemoryTransportOptions? options = null) =>
        UseTransport(sp => new InMemoryTransport(options ?? InMemoryTransportOptions.Default, sp.GetRequiredService<TimeProvider>()));

    /// <summary>Sends messages of this type to the named queue (by default they go to this endpoint's own queue).</summary>
    public HeraldBuilder Route<TMessage>(string queue)
    {
        Routes.Add(typeof(TMessage), queue);
        return this;
    }

    /// <summary>Changes the endpoint settings.</summary>
    public HeraldBuilder Configure(Action<HeraldOptions> configure)
    {
        Services.Configure(configure);
        return this;
    }

    /// <summary>Changes the JSON options of the default serializer, for example to put a source-generated context first.</summary>
    public HeraldBuilder ConfigureJson(Action<JsonSerializerOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        _jsonSetup.Add(configure);
        return this;
    }

    internal SystemTextJsonMessageSerializer CreateSerializer()
    {
        var options = SystemTextJsonMessageSerializer.CreateDefaultOptions();
        foreach (var setup in _jsonSetup)
        {
            setup(options);
        }

        return new SystemTextJsonMessageSerializer(options);
    }

    private static IEnumerable<Type> Closed(Type type, Type openInterface) =>
        type.GetInterfaces().Where(i => i.IsGenericType && i.GetGenericTypeDefinition() == openInterface);

    private bool TryAddHandler(Type type, ServiceLifetime lifetime)
    {
        var found = false;
        var messageInterfaces = Closed(type, typeof(IMessageHandler<>)).ToList();
        if (messageInterfaces.Count > 0)
        {
            found = true;
            Services.TryAdd(new ServiceDescriptor(type, type, lifetime));
            foreach (var service in messageInterfaces)
            {
                var messageType = service.GetGenericArguments()[0];
                if (!MessageTypes.TryGetByType(messageType, out _) && messageType.GetCustomAttribute<MessageTypeAttribute>() is not null)
                {
                    MessageTypes.Register(messageType);
                }

                if (!MessageHandlers.Any(r => r.MessageType == messageType && r.HandlerType == type))
                {
                    MessageHandlers.Add(new HandlerRegistration(messageType, type, lifetime));
                }
            }
        }

        foreach (var open in RequestHandlerInterfaces)
        {
            foreach (var service in Closed(type, open))
            {
                found = true;
                var requestType = RequestBus.OfOneKind(service.GetGenericArguments()[0]);
                if (_requestHandlers.TryGetValue(requestType, out var existing))
                {
                    if (existing == type)
                    {
                        continue;
                    }

                    throw new DuplicateHandlerException(requestType, existing, type);
                }

                _requestHandlers[requestType] = type;
                Services.Add(new ServiceDescriptor(service, type, lifetime));
            }
        }

        foreach (var service in Closed(type, typeof(IValidator<>)))
        {
            found = true;
            Services.TryAddEnumerable(new ServiceDescriptor(service, type, ServiceLifetime.Transient));
        }

        return found;
    }
}
