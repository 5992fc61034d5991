using System.Text;
using Herald.EventSourcing;
using Herald.Messages;

namespace Herald.Postgres.Tests;

public static class TestEvents
{
    public static Envelope New(string type = "thing-happened") => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = type,
        Time = new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero),
        Body = Encoding.UTF8.GetBytes($"{{\"id\":\"{Guid.NewGuid()}\"}}"),
    };

    public static Envelope[] Many(int count, string type = "thing-happened") => Enumerable.Range(0, count).Select(_ => New(type)).ToArray();

    public static string NewCategory() => "c" + Guid.NewGuid().ToString("N")[..20];

    public static string NewStream(string? category = null) => $"{category ?? NewCategory()}-{Guid.NewGuid():N}";

    public static async Task<List<RecordedEvent>> ReadAllAsync(IEventStore store, long after, EventFilter? filter = null)
    {
        var events = new List<RecordedEvent>();
        await foreach (var recorded in store.ReadAllAsync(after, filter))
        {
            events.Add(recorded);
        }

        return events;
    }

    /// <summary>
    /// Reads $all until it holds <paramref name="count"/> events: another transaction anywhere in the cluster may hold the
    /// horizon back for a moment (other test runs share the server).
    /// </summary>
    public static async Task<List<RecordedEvent>> ReadAllUntilAsync(IEventStore store, long after, EventFilter? filter, int count)
    {
        var events = new List<RecordedEvent>();
        await Herald.Conformance.Eventually.UntilAsync(
            async () => (events = await ReadAllAsync(store, after, filter)).Count >= count,
            $"$all holds {count} events after position {after}",
            TimeSpan.FromSeconds(20));
        return events;
    }

    public static async Task<List<RecordedEvent>> ReadStreamAsync(IEventStore store, string stream)
    {
        var events = new List<RecordedEvent>();
        await foreach (var recorded in store.ReadStreamAsync(stream))
        {
            events.Add(recorded);
        }

        return events;
    }
}
