using Herald.Messages;

namespace Herald.EventSourcing.Upcasting;

/// <summary>Migrates stored events of one type from one schema version to the next, on the raw envelope (no CLR types involved).</summary>
public interface IEventUpcaster
{
    /// <summary>The logical event type it migrates.</summary>
    string EventType { get; }

    /// <summary>The schema version it reads; it produces <c>FromVersion + 1</c>.</summary>
    int FromVersion { get; }

    /// <summary>Returns the envelope at the next schema version (the registry sets <see cref="Envelope.SchemaVersion"/>; keep the type).</summary>
    Envelope Upcast(Envelope envelope);
}
