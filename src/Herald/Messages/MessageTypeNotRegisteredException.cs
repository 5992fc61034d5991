namespace Herald.Messages;

/// <summary>Thrown when a CLR type is sent or published without being registered as a message type.</summary>
public sealed class MessageTypeNotRegisteredException : HeraldException
{
    /// <summary>Creates the exception for the unregistered CLR type.</summary>
    public MessageTypeNotRegisteredException(Type clrType)
        : base($"The type '{clrType.FullName}' is not registered as a message type. Mark it with [MessageType(\"some-name\")] and register it " +
               $"(h.AddMessageType<{clrType.Name}>() or h.AddMessageTypesFromAssembly(...)), or map it explicitly with h.AddMessageType<{clrType.Name}>(\"some-name\").")
    {
        ClrType = clrType;
    }

    /// <summary>The CLR type that has no registration.</summary>
    public Type ClrType { get; }
}
