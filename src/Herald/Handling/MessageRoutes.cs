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

    /// <summary>The queue a send goes to: the one its options name, else its type's route, else <paramref name="ownQueue"/>.</summary>
    public string SendDestination(Type messageType, DeliveryOptions? options, string ownQueue)
    {
        if (options?.Destination is { } named)
        {
            if (string.IsNullOrWhiteSpace(named))
            {
                throw new ArgumentException($"The send of {messageType.Name} names a blank DeliveryOptions.Destination; name a queue, or leave it null to use the type's route.", nameof(options));
            }

            return named;
        }

        return GetQueue(messageType) ?? ownQueue;
    }

    /// <summary>Refuses a publish whose options name a destination: a publish goes to its type's topic, to every subscriber.</summary>
    public static void RefuseDestination(Type messageType, DeliveryOptions? options)
    {
        if (options?.Destination is { } named)
        {
            throw new ArgumentException(
                $"The publish of {messageType.Name} names DeliveryOptions.Destination '{named}', but a publish goes to its type's topic, to every subscribed endpoint; send it to reach one queue.",
                nameof(options));
        }
    }
}
