namespace Herald.Cqrs;

/// <summary>Thrown when a command or query has no handler.</summary>
public sealed class HandlerNotFoundException : HeraldException
{
    /// <summary>Creates the exception naming the request type and the interface to implement.</summary>
    public HandlerNotFoundException(Type requestType, Type handlerInterface)
        : base($"No handler is registered for '{requestType.FullName}'. Implement {Describe(handlerInterface)} and register it with h.AddHandler<T>() or h.AddHandlersFromAssembly(...).")
    {
        RequestType = requestType;
    }

    /// <summary>The command or query type.</summary>
    public Type RequestType { get; }

    internal static string Describe(Type type) =>
        type.IsGenericType
            ? $"{type.Name[..type.Name.IndexOf('`', StringComparison.Ordinal)]}<{string.Join(", ", type.GetGenericArguments().Select(a => a.Name))}>"
            : type.Name;
}
