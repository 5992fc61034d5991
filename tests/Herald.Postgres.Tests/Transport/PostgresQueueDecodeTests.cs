using System.Collections.Concurrent;
using Herald.Handling;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Conformance;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Postgres.Tests.Transport;

/// <summary>A queue row the consumer cannot decode reaches the one dead-letter path (issue 9), and does not hold up the queue.</summary>
public sealed class PostgresQueueDecodeTests : IAsyncLifetime
{
    private readonly string _schema = PostgresTestDatabase.NewSchema();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => PostgresTestDatabase.DropSchemaAsync(_schema);

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
            .UsePostgres(PostgresTestDatabase.ConnectionString, o => o.Schema = _schema)
            .UsePostgresQueue(PostgresTestDatabase.ConnectionString, o =>
            {
                o.Schema = _schema;
                o.PollInterval = TimeSpan.FromMilliseconds(100);
            })
            .AddHandler<ProbeHandler>(ServiceLifetime.Singleton)
            .AddMessageType<Probe>());
        using var host = builder.Build();
        await host.StartAsync();

        // Written behind Herald's back: the headers are JSON, but not an object of strings.
        var corruptId = Guid.CreateVersion7();
        await using (var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString))
        {
            await connection.OpenAsync();
            await using var insert = new NpgsqlCommand(
                $"INSERT INTO \"{_schema}\".queue_messages (queue, message_id, message_type, schema_version, time, content_type, headers, body, enqueued_at, visible_at) " +
                "VALUES ($1, $2, 'pgqueue-probe', 1, now(), 'application/json', '{\"trace\": 1}'::jsonb, $3, now(), '-infinity')",
                connection);
            insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = queue });
            insert.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = corruptId });
            insert.Parameters.Add(new NpgsqlParameter<byte[]> { TypedValue = "{\"number\":1}"u8.ToArray() });
            await insert.ExecuteNonQueryAsync();
        }

        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Probe(2));

        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        await Eventually.UntilAsync(async () => await deadLetters.CountAsync(DeadLetterQuery.All) == 1, "the corrupt row is dead-lettered");
        await Eventually.UntilAsync(() => handled.Contains(2), "the message behind it is handled");
        await Eventually.UntilAsync(async () => await CountAsync("queue_messages", queue) == 0, "the queue is empty");
        await host.StopAsync();

        var deadLetter = Assert.Single(await deadLetters.ListAsync(DeadLetterQuery.All));
        Assert.Equal(corruptId, deadLetter.Envelope.MessageId);
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.False(string.IsNullOrWhiteSpace(deadLetter.ErrorMessage), "the dead letter says why");
        Assert.Equal("{\"number\":1}"u8.ToArray(), deadLetter.Envelope.Body.ToArray());
        Assert.DoesNotContain(1, handled);
        Assert.Equal(0L, await CountAsync("queue_dead_letters", queue));
    }

    private Task<long> CountAsync(string table, string queue) =>
        PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{_schema}\".{table} WHERE queue = '{queue}'");

    [MessageType("pgqueue-probe")]
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
