using System.Collections.Concurrent;
using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Handling;
using Herald.Handling.Pipeline;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Sqlite.Tests.EventSourcing;

/// <summary>A subscription run through an endpoint's chain on a SQLite file: its checkpoint and the handler's own table commit together.</summary>
public sealed class SqliteSubscriptionPipelineTests : IDisposable
{
    private const string SubscriptionId = "sqlite-pipe-sub";
    private readonly TempDatabase _file = new();

    public void Dispose() => _file.Dispose();

    [Fact]
    public async Task CheckpointAndUserTableWrite_CommitTogetherOrNotAtAll()
    {
        var seen = new ConcurrentQueue<(string Name, long? Checkpoint)>();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(seen);
        builder.Services.AddHerald(h => h
            .UseSqlite(_file.Path)
            .AddHandler<RowHandler>()
            .ConfigureRetries(r => r.NoRetries())
            .Configure(o => o.StartConsumer = false));
        using var host = builder.Build();
        await host.StartAsync();
        _file.Scalar("CREATE TABLE IF NOT EXISTS app_rows (key TEXT PRIMARY KEY)");
        var services = host.Services;
        var store = services.GetRequiredService<IEventStore>();
        var envelopes = services.GetRequiredService<EnvelopeFactory>();

        // "bad" writes its own row and then one that already exists: the commit fails, so neither its row nor its checkpoint is kept.
        var appended = await store.AppendAsync("rows-1", ExpectedVersion.NoStream, [envelopes.Create(new Row("one")), envelopes.Create(new Row("bad")), envelopes.Create(new Row("three"))]);
        var subscription = services.GetRequiredService<EndpointPipelineFactory>().CreateSubscription(
            store,
            services.GetRequiredService<ICheckpointStore>(),
            new EventSubscriptionOptions { SubscriptionId = SubscriptionId, CheckpointEvery = 1_000 });
        await using (subscription)
        {
            await subscription.StartAsync();
            await subscription.WaitForPositionAsync(appended.LastPosition).WaitAsync(TimeSpan.FromSeconds(30));
        }

        var first = (await store.ReadStreamAsync("rows-1").FirstAsync()).Position;
        Assert.Equal([("one", null), ("bad", first), ("three", first)], seen);
        Assert.Equal(["one", "three"], Keys());
        var deadLetter = Assert.Single(await services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = SubscriptionId }));
        Assert.Equal(DeadLetterCause.RetriesExhausted, deadLetter.Cause);
        Assert.Equal(appended.LastPosition, await services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync(SubscriptionId));
        await host.StopAsync();
    }

    private List<string> Keys()
    {
        using var connection = _file.OpenRaw();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT key FROM app_rows ORDER BY key";
        using var reader = command.ExecuteReader();
        var keys = new List<string>();
        while (reader.Read())
        {
            keys.Add(reader.GetString(0));
        }

        return keys;
    }

    [MessageType("sqlite-pipe-row")]
    public sealed record Row(string Name);

    /// <summary>Notes the checkpoint it finds, then writes its row (and "bad" a duplicate one) through the unit of work.</summary>
    public sealed class RowHandler(ConcurrentQueue<(string Name, long? Checkpoint)> seen, ICheckpointStore checkpoints) : IMessageHandler<Row>
    {
        public async ValueTask HandleAsync(Row message, MessageContext context, CancellationToken cancellationToken)
        {
            seen.Enqueue((message.Name, await checkpoints.GetCheckpointAsync(SubscriptionId, cancellationToken)));
            var keys = message.Name == "bad" ? new[] { "bad", "one" } : [message.Name];
            context.UnitOfWork.EnlistSqliteWrite(connection =>
            {
                foreach (var key in keys)
                {
                    using var insert = connection.CreateCommand();
                    insert.CommandText = "INSERT INTO app_rows (key) VALUES ($key)";
                    insert.Parameters.AddWithValue("$key", key);
                    insert.ExecuteNonQuery();
                }
            });
        }
    }
}
