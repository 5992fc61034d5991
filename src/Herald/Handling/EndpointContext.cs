namespace Herald.Handling;

/// <summary>What every <see cref="MessageContext"/> of one endpoint shares: its name, the root services, the bus, the outbox switch.</summary>
internal sealed record EndpointContext(string Name, IServiceProvider Root, IMessageBus Bus, bool UseOutbox);
