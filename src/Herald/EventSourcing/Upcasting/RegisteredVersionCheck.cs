using Herald.Messages;

namespace Herald.EventSourcing.Upcasting;

/// <summary>
/// The check between upcasting and deserializing: an event older than its type's registered schema version, which no
/// upcaster migrated, would be read as the current shape (its missing fields default, its renamed ones lost).
/// </summary>
internal static class RegisteredVersionCheck
{
    /// <summary>The error for <paramref name="envelope"/> when it is behind <paramref name="type"/>'s version, else null.</summary>
    public static EventUpcastingException? Behind(Envelope envelope, MessageTypeInfo type) =>
        envelope.SchemaVersion >= type.Version ? null : new EventUpcastingException(type.Name, envelope.SchemaVersion,
            $"The '{type.Name}' message {envelope.MessageId} is at v{envelope.SchemaVersion}, but '{type.Name}' is registered at v{type.Version} " +
            $"({type.ClrType.Name}) and no upcaster migrates it from v{envelope.SchemaVersion}: it would be read as v{type.Version}. " +
            $"Register an upcaster from v{envelope.SchemaVersion} (EventUpcasterRegistry.Add).");
}
