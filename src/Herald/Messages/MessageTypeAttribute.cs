namespace Herald.Messages;

/// <summary>Gives a message class its stable logical type name (what goes on the wire) and schema version.</summary>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Struct, AllowMultiple = false, Inherited = false)]
public sealed class MessageTypeAttribute : Attribute
{
    /// <summary>Creates the attribute with the logical type name, such as <c>order-created</c>.</summary>
    public MessageTypeAttribute(string name)
    {
        Name = name;
    }

    /// <summary>The logical type name.</summary>
    public string Name { get; }

    /// <summary>The current schema version of this type; older versions are migrated by upcasters.</summary>
    public int Version { get; init; } = 1;
}
