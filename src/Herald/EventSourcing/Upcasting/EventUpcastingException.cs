namespace Herald.EventSourcing.Upcasting;

/// <summary>Thrown on read when a stored event cannot be migrated: an upcaster failed or a step of the chain is missing.</summary>
public sealed class EventUpcastingException : HeraldException
{
    /// <summary>Creates the exception naming the event type and the schema version that could not be migrated.</summary>
    public EventUpcastingException(string eventType, int schemaVersion, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        EventType = eventType;
        SchemaVersion = schemaVersion;
    }

    /// <summary>The event type.</summary>
    public string EventType { get; }

    /// <summary>The schema version the migration stopped at.</summary>
    public int SchemaVersion { get; }
}
