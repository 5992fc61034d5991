namespace Herald.Handling;

/// <summary>The message handlers of this host, per message type.</summary>
internal sealed class HandlerRegistry
{
    private readonly Dictionary<Type, HandlerInvoker> _invokers;

    public HandlerRegistry(IEnumerable<HandlerRegistration> registrations)
    {
        _invokers = registrations
            .GroupBy(r => r.MessageType)
            .ToDictionary(g => g.Key, g => HandlerInvoker.Create(g.Key, [.. g]));
    }

    public IEnumerable<Type> MessageTypes => _invokers.Keys;

    public HandlerInvoker? Get(Type messageType) => _invokers.GetValueOrDefault(messageType);
}
