using Microsoft.Extensions.DependencyInjection;

namespace Herald.Handling;

/// <summary>One handler class registered for one message type.</summary>
/// <param name="MessageType">The CLR message type.</param>
/// <param name="HandlerType">The handler class.</param>
/// <param name="Lifetime">Its DI lifetime.</param>
internal sealed record HandlerRegistration(Type MessageType, Type HandlerType, ServiceLifetime Lifetime);
