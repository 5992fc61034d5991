using System.Text.Json.Nodes;
using Herald.Messages;

namespace Herald.EventSourcing.Upcasting;

/// <summary>
/// Base class for upcasters that rewrite a JSON body. In a chain of JSON upcasters the body is parsed once and
/// serialized once, however many steps run.
/// </summary>
public abstract class JsonEventUpcaster : IEventUpcaster
{
    /// <summary>Creates the upcaster for one event type and the schema version it reads.</summary>
    protected JsonEventUpcaster(string eventType, int fromVersion)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(eventType);
        ArgumentOutOfRangeException.ThrowIfLessThan(fromVersion, 1);
        EventType = eventType;
        FromVersion = fromVersion;
    }

    /// <inheritdoc />
    public string EventType { get; }

    /// <inheritdoc />
    public int FromVersion { get; }

    /// <inheritdoc />
    public Envelope Upcast(Envelope envelope)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        var body = JsonBody.Parse(envelope);
        return envelope with { Body = JsonBody.Serialize(UpcastBody(body, envelope)), SchemaVersion = FromVersion + 1 };
    }

    /// <summary>Returns the body at the next schema version; it may change <paramref name="body"/> in place and return it.</summary>
    protected abstract JsonNode Upcast(JsonNode body, Envelope envelope);

    internal JsonNode UpcastBody(JsonNode body, Envelope envelope) =>
        Upcast(body, envelope) ?? throw new InvalidOperationException($"The upcaster of '{EventType}' v{FromVersion} returned null.");
}
