namespace Herald.Messages;

/// <summary>One registration: a CLR type, its logical name and its current schema version.</summary>
/// <param name="ClrType">The .NET type that carries the message.</param>
/// <param name="Name">The stable logical name that goes on the wire.</param>
/// <param name="Version">The current schema version.</param>
public sealed record MessageTypeInfo(Type ClrType, string Name, int Version);
