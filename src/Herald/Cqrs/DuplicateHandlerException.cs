namespace Herald.Cqrs;

/// <summary>Thrown at configuration time when a command or query gets a second handler.</summary>
public sealed class DuplicateHandlerException : HeraldException
{
    /// <summary>Creates the exception naming the request type and both handlers.</summary>
    public DuplicateHandlerException(Type requestType, Type existingHandler, Type newHandler)
        : base($"'{requestType.FullName}' already has a handler, '{existingHandler.FullName}'; '{newHandler.FullName}' cannot be a second one. " +
               "A command or query has exactly one handler: remove one registration (events with several handlers use IMessageHandler<T>).")
    {
        RequestType = requestType;
    }

    /// <summary>The command or query type.</summary>
    public Type RequestType { get; }
}
