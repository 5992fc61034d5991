using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using System.Reflection;

namespace Herald.Messages;

/// <summary>
/// Maps CLR types to stable logical message type names and back. Only the logical name goes on the wire,
/// so classes can be renamed or moved without breaking other services or stored events.
/// </summary>
public sealed class MessageTypeRegistry
{
    /// <summary>Longest accepted logical name.</summary>
    public const int MaxNameLength = 200;

    private readonly ConcurrentDictionary<Type, MessageTypeInfo> _byType = new();
    private readonly ConcurrentDictionary<string, MessageTypeInfo> _byName = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    /// <summary>Every registration, in no particular order.</summary>
    public IEnumerable<MessageTypeInfo> Registrations => _byType.Values;

    /// <summary>Registers a type under the name and version of its <see cref="MessageTypeAttribute"/>.</summary>
    public MessageTypeInfo Register<T>() => Register(typeof(T));

    /// <summary>Registers a type under an explicit logical name and schema version.</summary>
    public MessageTypeInfo Register<T>(string name, int version = 1) => Register(typeof(T), name, version);

    /// <summary>Registers a type under the name and version of its <see cref="MessageTypeAttribute"/>.</summary>
    public MessageTypeInfo Register(Type type)
    {
        ArgumentNullException.ThrowIfNull(type);
        var attribute = type.GetCustomAttribute<MessageTypeAttribute>()
            ?? throw new MessageTypeRegistrationException(
                $"The type '{type.FullName}' has no [MessageType(\"name\")] attribute. Add one, or register it with an explicit name.");
        return Register(type, attribute.Name, attribute.Version);
    }

    /// <summary>Registers a type under an explicit logical name and schema version.</summary>
    public MessageTypeInfo Register(Type type, string name, int version = 1)
    {
        ArgumentNullException.ThrowIfNull(type);
        ValidateName(name, type);
        if (version < 1)
        {
            throw new MessageTypeRegistrationException($"The schema version of message type '{name}' ({type.FullName}) must be 1 or more, not {version}.");
        }

        if (type.IsAbstract || type.IsInterface || type.ContainsGenericParameters)
        {
            throw new MessageTypeRegistrationException($"The type '{type.FullName}' cannot be a message type: it must be a concrete, closed type.");
        }

        var info = new MessageTypeInfo(type, name, version);
        lock (_gate)
        {
            if (_byType.TryGetValue(type, out var existingForType))
            {
                if (existingForType == info)
                {
                    return existingForType;
                }

                throw new MessageTypeRegistrationException(
                    $"The type '{type.FullName}' is already registered as '{existingForType.Name}' v{existingForType.Version}; it cannot also be '{name}' v{version}.");
            }

            if (_byName.TryGetValue(name, out var existingForName))
            {
                throw new MessageTypeRegistrationException(
                    $"The message type name '{name}' is already registered for '{existingForName.ClrType.FullName}'; '{type.FullName}' needs a name of its own.");
            }

            _byName[name] = info;
            _byType[type] = info;
        }

        return info;
    }

    /// <summary>Registers every type of the assembly that carries a <see cref="MessageTypeAttribute"/>.</summary>
    public int RegisterFromAssembly(Assembly assembly)
    {
        ArgumentNullException.ThrowIfNull(assembly);
        var count = 0;
        foreach (var type in assembly.GetTypes())
        {
            if (type.GetCustomAttribute<MessageTypeAttribute>() is not null)
            {
                Register(type);
                count++;
            }
        }

        return count;
    }

    /// <summary>Returns the registration of a CLR type or throws <see cref="MessageTypeNotRegisteredException"/>.</summary>
    public MessageTypeInfo GetByType(Type type)
    {
        ArgumentNullException.ThrowIfNull(type);
        return _byType.TryGetValue(type, out var info) ? info : throw new MessageTypeNotRegisteredException(type);
    }

    /// <summary>Returns the registration of a logical name or throws <see cref="UnknownMessageTypeException"/>.</summary>
    public MessageTypeInfo GetByName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _byName.TryGetValue(name, out var info) ? info : throw new UnknownMessageTypeException(name);
    }

    /// <summary>Looks up the registration of a CLR type.</summary>
    public bool TryGetByType(Type type, [NotNullWhen(true)] out MessageTypeInfo? info) => _byType.TryGetValue(type, out info);

    /// <summary>Looks up the registration of a logical name.</summary>
    public bool TryGetByName(string name, [NotNullWhen(true)] out MessageTypeInfo? info) => _byName.TryGetValue(name, out info);

    /// <summary>Logical name of a CLR type; throws when it is not registered.</summary>
    public string GetName(Type type) => GetByType(type).Name;

    /// <summary>CLR type of a logical name; throws when it is not registered.</summary>
    public Type GetType(string name) => GetByName(name).ClrType;

    private static void ValidateName(string name, Type type)
    {
        if (string.IsNullOrWhiteSpace(name))
        {
            throw new MessageTypeRegistrationException($"The message type name for '{type.FullName}' is empty.");
        }

        if (name.Length > MaxNameLength)
        {
            throw new MessageTypeRegistrationException($"The message type name '{name[..40]}...' for '{type.FullName}' is longer than {MaxNameLength} characters.");
        }

        foreach (var c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ':' or '/'))
            {
                throw new MessageTypeRegistrationException(
                    $"The message type name '{name}' for '{type.FullName}' contains '{c}'; use ASCII letters, digits and - _ . : / only.");
            }
        }
    }
}
