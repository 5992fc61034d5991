using System.Text.Json;
using Herald.Sagas;

namespace Herald.Internal;

/// <summary>
/// How the SQL saga stores keep <see cref="SagaInstance.Timeouts"/> in one column: a JSON array of
/// <c>{"name","id","dueAt","messageType","body"}</c> (the body in base64, and <c>"resentAt"</c> once the sweep sent it again), or null when the instance holds none.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class SagaTimeoutColumn
{
    /// <summary>The column's JSON, or null for no timeouts.</summary>
    public static string? Write(IReadOnlyList<SagaTimeout> timeouts)
    {
        ArgumentNullException.ThrowIfNull(timeouts);
        if (timeouts.Count == 0)
        {
            return null;
        }

        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartArray();
            foreach (var timeout in timeouts)
            {
                json.WriteStartObject();
                json.WriteString("name", timeout.Name);
                json.WriteString("id", timeout.Id);
                json.WriteString("dueAt", timeout.DueAt);
                json.WriteString("messageType", timeout.MessageType);
                json.WriteBase64String("body", timeout.Body.Span);
                if (timeout.ResentAt is { } resentAt)
                {
                    json.WriteString("resentAt", resentAt);
                }

                json.WriteEndObject();
            }

            json.WriteEndArray();
        }

        return System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    /// <summary>The timeouts the column holds; empty for null.</summary>
    public static IReadOnlyList<SagaTimeout> Read(string? json)
    {
        if (json is null)
        {
            return [];
        }

        using var document = JsonDocument.Parse(json);
        var timeouts = new List<SagaTimeout>(document.RootElement.GetArrayLength());
        foreach (var item in document.RootElement.EnumerateArray())
        {
            timeouts.Add(new SagaTimeout(
                item.GetProperty("name").GetString()!,
                item.GetProperty("id").GetGuid(),
                item.GetProperty("dueAt").GetDateTimeOffset(),
                item.GetProperty("messageType").GetString()!,
                item.GetProperty("body").GetBytesFromBase64())
            {
                ResentAt = item.TryGetProperty("resentAt", out var resentAt) ? resentAt.GetDateTimeOffset() : null,
            });
        }

        return timeouts;
    }
}
