using System.Text.Json.Nodes;
using Herald.Messages;

namespace Herald.EventSourcing.Upcasting;

internal sealed class DelegateJsonEventUpcaster(string eventType, int fromVersion, Func<JsonNode, JsonNode> upcast)
    : JsonEventUpcaster(eventType, fromVersion)
{
    protected override JsonNode Upcast(JsonNode body, Envelope envelope) => upcast(body);
}
