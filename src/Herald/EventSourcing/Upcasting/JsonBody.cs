using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;
using Herald.Messages;

namespace Herald.EventSourcing.Upcasting;

internal static class JsonBody
{
    public static JsonNode Parse(Envelope envelope) =>
        JsonNode.Parse(envelope.Body.Span)
        ?? throw new JsonException($"The body of the '{envelope.MessageType}' event {envelope.MessageId} is the JSON literal null.");

    public static byte[] Serialize(JsonNode node)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            node.WriteTo(writer);
        }

        return buffer.WrittenSpan.ToArray();
    }
}
