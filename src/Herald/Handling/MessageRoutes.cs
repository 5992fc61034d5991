namespace Herald.Handling;

/// <summary>Which queue each message type is sent to (publish always goes to the topic named after the type).</summary>
internal sealed class MessageRoutes
{
    private readonly Dictionary<Type, string> _queues = [];

    public void Add(Type messageType, string queue)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(queue);
        _queues[messageType] = queue;
    }

    public string? GetQueue(Type messageType) => _queues.GetValueOrDefault(messageType);
}
