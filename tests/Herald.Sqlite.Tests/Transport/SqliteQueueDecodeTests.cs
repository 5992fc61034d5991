using System.Collections.Concurrent;
using Herald.Handling;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Conformance;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>A queue row the consumer cannot decode reaches the one dead-letter path (issue 9), and does not hold up the queue.</summary>
public sealed class SqliteQueueDecodeTests : IDisposable
{
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    // Regression (issue 9): a row whose envelope failed to decode made every claim of its queue fail, so nothing behind it was delivered.
    [Fact]
    public async Task ARowWithACorruptEnvelope_IsDeadLetteredWithItsReason_AndTheMessageBehindItIsHandled()
    {
        var queue = "decode-" + Guid.NewGuid().ToString("N")[..8];
        var handled = new ConcurrentBag<int>();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(handled);
        builder.Services.AddHerald(h => h
            .Configure(o => o.EndpointName = queue)
            .UseSqlite(_database.Path)
            .UseSqliteQueue(_database.Path, o => o.PollInterval = TimeSpan.FromMilliseconds(100))
            .AddHandler<ProbeHandler>(ServiceLifetime.Singleton)
            .AddMessageType<Probe>());
        using var host = builder.Build();
        await host.StartAsync();

        // Written behind Herald's back: the headers column holds no JSON object.
        var corruptId = Guid.CreateVersion7();
        using (var connection = _database.OpenRaw())
        using (var insert = connection.CreateCommand())
        {
            insert.CommandText =
                "INSERT INTO herald_queue_messages (queue, visible_at, attempts, message_id, message_type, schema_version, time, time_offset, " +
                "content_type, headers, body, enqueued_at) VALUES ($queue, 0, 0, $id, 'sqlqueue-probe', 1, 0, 0, 'application/json', '{not json', $body, 0)";
            insert.Parameters.AddWithValue("$queue", queue);
            insert.Parameters.AddWithValue("$id", corruptId.ToByteArray(bigEndian: true));
            insert.Parameters.AddWithValue("$body", "{\"number\":1}"u8.ToArray());
            insert.ExecuteNonQuery();
        }

        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Probe(2));

        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        await Eventually.UntilAsync(async () => await deadLetters.CountAsync(DeadLetterQuery.All) == 1, "the corrupt row is dead-lettered");
        await Eventually.UntilAsync(() => handled.Contains(2), "the message behind it is handled");
        await Eventually.UntilAsync(() => (long)_database.Scalar("SELECT COUNT(*) FROM herald_queue_messages")! == 0, "the queue is empty");
        await host.StopAsync();

        var deadLetter = Assert.Single(await deadLetters.ListAsync(DeadLetterQuery.All));
        Assert.Equal(corruptId, deadLetter.Envelope.MessageId);
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.False(string.IsNullOrWhiteSpace(deadLetter.ErrorMessage), "the dead letter says why");
        Assert.Equal("{\"number\":1}"u8.ToArray(), deadLetter.Envelope.Body.ToArray());
        Assert.DoesNotContain(1, handled);
        Assert.Equal(0L, _database.Scalar("SELECT COUNT(*) FROM herald_queue_dead_letters"));
    }

    [MessageType("sqlqueue-probe")]
    public sealed record Probe(int Number);

    public sealed class ProbeHandler(ConcurrentBag<int> handled) : IMessageHandler<Probe>
    {
        public ValueTask HandleAsync(Probe message, MessageContext context, CancellationToken cancellationToken)
        {
            handled.Add(message.Number);
            return ValueTask.CompletedTask;
        }
    }
}
