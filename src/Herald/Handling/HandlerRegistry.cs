namespace Herald.Handling;

/// <summary>The message handlers of this host, per message type.</summary>
internal sealed class HandlerRegistry
{
    private readonly Dictionary<Type, HandlerInvoker> _invokers;

    /// <summary>
    /// The invokers of <paramref name="registrations"/>; with the final <paramref name="services"/>, handlers that need no
    /// scope are built from the root (<see cref="RootActivation"/>).
    /// </summary>
    public HandlerRegistry(IEnumerable<HandlerRegistration> registrations, Microsoft.Extensions.DependencyInjection.IServiceCollection? services = null)
    {
        _invokers = registrations
            .GroupBy(r => r.MessageType)
            .ToDictionary(g => g.Key, g => HandlerInvoker.Create(g.Key, [.. g], services));
    }

    /// <summary>A registry of ready invokers (a projection's handlers, which are not DI services).</summary>
    public HandlerRegistry(IReadOnlyDictionary<Type, HandlerInvoker> invokers)
    {
        _invokers = new Dictionary<Type, HandlerInvoker>(invokers);
    }

    public IEnumerable<Type> MessageTypes => _invokers.Keys;

    public HandlerInvoker? Get(Type messageType) => _invokers.GetValueOrDefault(messageType);
}
