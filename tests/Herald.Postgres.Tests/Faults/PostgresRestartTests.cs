using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Herald.Conformance;
using Herald.Conformance.Faults;
using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Handling;
using Herald.Messages;
using Herald.Postgres.Persistence;
using Herald.Processes.Servers;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Outbox;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using Xunit.Abstractions;

namespace Herald.Postgres.Tests.Faults;

/// <summary>
/// Issue 10, faults under load: a private PostgreSQL server is crashed (immediate stop) and started again while appends,
/// the PostgreSQL queue's consumers, the outbox relay and a catch-up subscription all run against it. Afterwards every
/// message is handled exactly once (its effect is a row written in the handler's unit of work, with the inbox on), every
/// acknowledged append is in the store with gap-free stream versions, the subscription has seen each event once up to
/// the head, the outbox is empty and nothing is dead-lettered.
/// </summary>
public sealed class PostgresRestartTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const string Schema = "faults";
    private const int Messages = 600;
    private const int Producers = 4;
    private const int Appenders = 4;
    private const int AppendsPerAppender = 60;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private readonly FaultScene _scene = new(output, LogLevel.Information);
    private readonly string _endpoint = "pgfault-" + Guid.NewGuid().ToString("N")[..8];
    private PostgresServer? _server;

    private PostgresServer Server => _server!;

    public async Task InitializeAsync() => _scene.Server = _server = await PostgresServer.StartAsync();

    public Task DisposeAsync() => _scene.DisposeAsync().AsTask();

    [Fact]
    public async Task ServerCrashedAndRestarted_UnderAppendsQueueOutboxAndSubscription_LosesNothing_AndCompletesNothingTwice_Issue10()
    {
        var clock = Stopwatch.StartNew();
        var probe = new Probe(Messages / 4);
        var host = await StartHostAsync(probe);
        await ExecuteAsync($"CREATE TABLE \"{Schema}\".effects (message_id uuid NOT NULL, kind text NOT NULL, n int NOT NULL)");
        var store = host.Services.GetRequiredService<IEventStore>();
        var transport = host.Services.GetRequiredService<ITransport>();

        var seen = new ConcurrentDictionary<Guid, int>();
        await using var subscription = await EventSubscription.StartNewAsync(
            store,
            host.Services.GetRequiredService<ICheckpointStore>(),
            (recorded, _) =>
            {
                seen.AddOrUpdate(recorded.EventId, 1, (_, n) => n + 1);
                return ValueTask.CompletedTask;
            },
            new EventSubscriptionOptions { SubscriptionId = "faults-catch-up", BatchSize = 50, CheckpointEvery = 20 });

        var restarting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var retries = 0;
        async Task RetryAsync(Func<Task> operation)
        {
            var until = clock.Elapsed + Deadline;
            while (true)
            {
                try
                {
                    await operation();
                    return;
                }
                catch (Exception ex) when (ex is not OperationCanceledException && clock.Elapsed < until)
                {
                    // Not acknowledged: it may or may not have been written, so do it again with the same ids (a message id
                    // the inbox knows, an event id at the same place: both are no-ops when they were written).
                    Interlocked.Increment(ref retries);
                    await Task.Delay(50);
                }
            }
        }

        // Half of every load before the crash, half during and after it.
        var sent = new ConcurrentBag<int>();
        var producers = Enumerable.Range(0, Producers).Select(p => Task.Run(async () =>
        {
            for (var i = p; i < Messages; i += Producers)
            {
                if (i >= Messages / 2)
                {
                    await restarting.Task;
                }

                var envelope = Envelope("pgfault-work", new Work(i));
                await RetryAsync(() => transport.SendAsync(_endpoint, envelope).AsTask());
                sent.Add(i);
            }
        })).ToList();

        var appended = new ConcurrentBag<(string Stream, long Version, Guid Id)>();
        var appenders = Enumerable.Range(0, Appenders).Select(a => Task.Run(async () =>
        {
            for (var i = 0; i < AppendsPerAppender; i++)
            {
                if (i == AppendsPerAppender / 2)
                {
                    await restarting.Task;
                }

                var stream = $"ledger-{a}x{i % 2}";
                var version = (i / 2) + 1;
                var recorded = Envelope("pgfault-entry", new Entry(a, i));
                await RetryAsync(() => store.AppendAsync(stream, ExpectedVersion.FromLoadedVersion(version - 1), [recorded]).AsTask());
                appended.Add((stream, version, recorded.MessageId));
            }
        })).ToList();

        // Crash the server once the consumers are busy.
        await probe.Busy.Task.WaitAsync(Deadline);
        restarting.SetResult();
        output.WriteLine($"{clock.Elapsed}: crashing PostgreSQL with {probe.Handled} messages handled");
        await Server.RestartAsync();
        output.WriteLine($"{clock.Elapsed}: PostgreSQL is back");

        await Task.WhenAll(producers.Concat(appenders)).WaitAsync(Deadline);
        Assert.Equal(Messages, sent.Count);
        Assert.Equal(Appenders * AppendsPerAppender, appended.Count);

        // Drain: every message and its outboxed follow-up handled.
        var outbox = host.Services.GetRequiredService<IOutboxStore>();
        using var progress = new Timer(_ => output.WriteLine($"{clock.Elapsed}: {probe.Handled} work messages committed, subscription at {subscription.Position}"), null, 5000, 5000);
        await Eventually.UntilAsync(
            async () => await ScalarAsync("SELECT count(DISTINCT (kind, n)) FROM \"faults\".effects") == 2 * Messages && await outbox.CountPendingAsync() == 0,
            "every message and every follow-up from the outbox is handled",
            Deadline);
        var head = await store.GetLastPositionAsync();
        await subscription.WaitForPositionAsync(head).WaitAsync(Deadline);
        output.WriteLine($"{clock.Elapsed}: drained; {retries} operations retried by the test");

        // Exactly once: one effect per message and kind, no more.
        var effects = await ListAsync("SELECT kind, n, count(*) FROM \"faults\".effects GROUP BY kind, n HAVING count(*) > 1");
        Assert.True(effects.Count == 0, "completed twice: " + string.Join(", ", effects));
        Assert.Equal(2L * Messages, await ScalarAsync("SELECT count(*) FROM \"faults\".effects"));
        Assert.Equal(0L, await host.Services.GetRequiredService<IDeadLetterStore>().CountAsync(DeadLetterQuery.All));
        Assert.Equal(0L, await outbox.CountPendingAsync());

        // Appends: every acknowledged one is where it was acknowledged, and every stream is gap-free.
        foreach (var stream in appended.GroupBy(a => a.Stream))
        {
            var events = await store.ReadStreamAsync(stream.Key).ToListAsync();
            Assert.Equal(Enumerable.Range(1, events.Count).Select(v => (long)v), events.Select(e => e.Version));
            Assert.Equal(stream.OrderBy(a => a.Version).Select(a => (a.Version, a.Id)), events.Select(e => (e.Version, e.EventId)));
        }

        // The handlers' own appends: one event per message, in gap-free streams.
        var handlerEvents = 0;
        for (var s = 0; s < Probe.Streams; s++)
        {
            var events = await store.ReadStreamAsync($"jobs-{s}").ToListAsync();
            Assert.Equal(Enumerable.Range(1, events.Count).Select(v => (long)v), events.Select(e => e.Version));
            handlerEvents += events.Count;
        }

        Assert.Equal(Messages, handlerEvents);

        // The subscription reached the head and saw every event of the log once.
        var all = await store.ReadAllAsync().ToListAsync();
        Assert.Equal(head, all[^1].Position);
        Assert.Equal(Appenders * AppendsPerAppender + Messages, all.Count);
        Assert.True(subscription.Position >= head);
        Assert.Equal(all.Select(e => e.EventId).Order(), seen.Keys.Order());
        Assert.All(seen, pair => Assert.Equal(1, pair.Value));
        output.WriteLine($"{clock.Elapsed}: done");
    }

    private Task<IHost> StartHostAsync(Probe probe)
    {
        return _scene.StartHostAsync(services => services.AddSingleton(probe).AddHerald(h => h
            .Configure(o => o.EndpointName = _endpoint)
            .UsePostgres(Server.ConnectionString, o => o.Schema = Schema)
            .UsePostgresQueue(Server.ConnectionString, o =>
            {
                o.Schema = Schema;
                o.PollInterval = TimeSpan.FromMilliseconds(500);
            })
            .UseInbox()
            .UseOutbox(o => o.PollInterval = TimeSpan.FromMilliseconds(200))
            .AddMessageType<Work>()
            .AddMessageType<Done>()
            .AddMessageType<Entry>()
            .Route<Done>(_endpoint)
            .AddHandler<WorkHandler>(ServiceLifetime.Singleton)
            .AddHandler<DoneHandler>(ServiceLifetime.Singleton)
            // Enough delayed retries to outlast the restart: a message must not be dead-lettered for it.
            .ConfigureRetries(r => r.Immediate(1).Delayed(30, TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1)))));
    }

    private static Envelope Envelope<T>(string type, T message) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = type,
        Time = DateTimeOffset.UtcNow,
        Body = JsonSerializer.SerializeToUtf8Bytes(message, JsonSerializerOptions.Web),
    };

    private async Task ExecuteAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(Server.ConnectionString + ";Pooling=false");
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    private async Task<long> ScalarAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(Server.ConnectionString + ";Pooling=false");
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        return Convert.ToInt64(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
    }

    private async Task<List<string>> ListAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(Server.ConnectionString + ";Pooling=false");
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await using var reader = await command.ExecuteReaderAsync();
        var rows = new List<string>();
        while (await reader.ReadAsync())
        {
            rows.Add($"{reader.GetString(0)} {reader.GetInt32(1)} x{reader.GetInt64(2)}");
        }

        return rows;
    }

    [MessageType("pgfault-work")]
    public sealed record Work(int N);

    [MessageType("pgfault-done")]
    public sealed record Done(int N);

    [MessageType("pgfault-entry")]
    public sealed record Entry(int Appender, int N);

    /// <summary>Counts handled messages and says when the consumers are busy.</summary>
    public sealed class Probe(int busyAt)
    {
        public const int Streams = 8;
        private int _handled;

        public TaskCompletionSource Busy { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Handled => Volatile.Read(ref _handled);

        public void Committed()
        {
            if (Interlocked.Increment(ref _handled) >= busyAt)
            {
                Busy.TrySetResult();
            }
        }
    }

    /// <summary>Records its effect, appends an event and sends a follow-up, all in the message's unit of work.</summary>
    public sealed class WorkHandler(Probe probe) : IMessageHandler<Work>
    {
        public async ValueTask HandleAsync(Work message, MessageContext context, CancellationToken cancellationToken)
        {
            await RecordAsync(context, "work", message.N, cancellationToken);
            var store = context.Services.GetRequiredService<IEventStore>();
            await store.AppendAsync($"jobs-{message.N % Probe.Streams}", ExpectedVersion.Any, [Envelope("pgfault-entry", new Entry(-1, message.N))], context.UnitOfWork, cancellationToken);
            await context.SendAsync(new Done(message.N), cancellationToken: cancellationToken);
            context.UnitOfWork.OnCommitted(_ =>
            {
                probe.Committed();
                return ValueTask.CompletedTask;
            });
        }
    }

    /// <summary>Records the follow-up's effect in its unit of work.</summary>
    public sealed class DoneHandler : IMessageHandler<Done>
    {
        public ValueTask HandleAsync(Done message, MessageContext context, CancellationToken cancellationToken) =>
            RecordAsync(context, "done", message.N, cancellationToken);
    }

    private static async ValueTask RecordAsync(MessageContext context, string kind, int n, CancellationToken cancellationToken)
    {
        var transaction = await context.UnitOfWork.GetNpgsqlTransactionAsync(cancellationToken);
        await using var command = new NpgsqlCommand("INSERT INTO \"faults\".effects (message_id, kind, n) VALUES ($1, $2, $3)", transaction.Connection, transaction);
        command.Parameters.Add(new NpgsqlParameter { Value = context.Envelope.MessageId });
        command.Parameters.Add(new NpgsqlParameter { Value = kind });
        command.Parameters.Add(new NpgsqlParameter { Value = n });
        await command.ExecuteNonQueryAsync(cancellationToken);
    }
}
