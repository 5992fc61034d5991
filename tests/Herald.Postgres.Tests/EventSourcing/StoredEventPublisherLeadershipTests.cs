using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.EventSourcing;
using Herald.Handling;
using Herald.Messages;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Postgres.Tests.EventSourcing;

/// <summary>
/// Stored events are published by one node at a time: every node shares the publisher's checkpoint, so two publishing
/// at once would both read from it and publish each event twice (found by the order service's two-instance run, issue 12).
/// </summary>
public sealed class StoredEventPublisherLeadershipTests(PostgresSchemaFixture schema) : IClassFixture<PostgresSchemaFixture>
{
    [MessageType("publisher-leadership-noted")]
    public sealed record Noted(int Number);

    public sealed class Received
    {
        public ConcurrentQueue<int> Numbers { get; } = new();
    }

    public sealed class NotedHandler(Received received) : IMessageHandler<Noted>
    {
        public ValueTask HandleAsync(Noted message, MessageContext context, CancellationToken cancellationToken)
        {
            received.Numbers.Enqueue(message.Number);
            return ValueTask.CompletedTask;
        }
    }

    private async Task<IHost> StartAsync(Received received)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(received);
        builder.Services.AddHerald(h => h
            .UsePostgres(PostgresTestDatabase.ConnectionString, o => o.Schema = schema.Schema)
            .AddHandler<NotedHandler>()
            .PublishStoredEvents());
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [Fact]
    public async Task TwoNodesOnOneStore_PublishEachStoredEventOnce()
    {
        // Each node has its own in-memory transport, so what a node publishes only its own handler receives.
        var atFirst = new Received();
        var atSecond = new Received();
        using var first = await StartAsync(atFirst);
        using var second = await StartAsync(atSecond);
        var store = first.Services.GetRequiredService<IEventStore>();
        var envelopes = first.Services.GetRequiredService<EnvelopeFactory>();

        var appended = await store.AppendAsync("noted-1", ExpectedVersion.NoStream, [.. Enumerable.Range(1, 20).Select(i => envelopes.Create(new Noted(i)))]);
        await Eventually.UntilAsync(
            async () => await first.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync("herald-event-publisher") >= appended.LastPosition,
            "the publisher's checkpoint reaches the last event");
        await Eventually.UntilAsync(() => atFirst.Numbers.Count + atSecond.Numbers.Count >= 20, "every event is received");

        // One node published them all; the other published none.
        var (publisher, other) = atFirst.Numbers.IsEmpty ? (atSecond, atFirst) : (atFirst, atSecond);
        Assert.Equal(Enumerable.Range(1, 20), publisher.Numbers.Order());
        Assert.Empty(other.Numbers);
    }
}
