using Herald.Sagas;
using Herald.Sqlite.EventSourcing;
using Herald.Persistence;
using System.Globalization;
using System.Text;
using Herald.CrashChild;
using Herald.Messages;
using Herald.Postgres.EventSourcing;
using Herald.Reliability;
using Herald.Reliability.Outbox;
using Herald.Sqlite;
using Herald.Sqlite.Reliability;
using Herald.Handling;
using Herald.Hosting;
using Herald.Postgres.Transport;
using Herald.Sqlite.Transport;
using Herald.Transport;
using Herald.EventSourcing;
using Herald.Streams;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

// Usage: Herald.CrashChild sqlite <database file> <message count>
//        Herald.CrashChild postgres <connection string> <schema> <message count>
// Commits <count> outbox messages in one unit of work, prints "committed <ids>", then adds as many to a second unit of work
// that never commits and prints "uncommitted <ids>". With postgres, a host started by UsePostgres also runs the outbox relay,
// which takes the schema's outbox leadership and starts sending the oldest committed message to a transport that never
// finishes a send; it prints "sending <id>". Then "ready", and it blocks until the test kills it with SIGKILL: nothing here
// ever reaches a transport.
//        Herald.CrashChild saga-sqlite <database file>
// Starts saga "crash-saga" instance "saga-1" (steps one, two, three; each inserts its name into the file's saga_effects
// table through the step's unit of work). Step two inserts, prints "ready" and never finishes, so the kill lands in the
// middle of a step whose writes are not committed.
//        Herald.CrashChild saga-timeout-sqlite <database file>
// Runs state machine "crash-orders" on the file's SQL queue, without an outbox, prints "ready" and sends it OrderPlaced
// "order-1", whose transition schedules a payment timeout: once the transition has committed, the timeout's send kills
// the process with SIGKILL ("killing <id>") before the queue has it.
//        Herald.CrashChild outbox-relay-sqlite <database file> <message count> <kill at send>
//        Herald.CrashChild outbox-relay-postgres <connection string> <schema> <message count> <kill at send>
// Starts a host whose outbox relay sends to the durable SQL queue of the same database (queue "crash-queue", which outlives
// the child) through KillingTransport, commits <count> outbox messages and enlists as many in a unit of work that never
// commits (printing "committed <ids>" and "uncommitted <ids>" as above), prints "ready", and only then lets the relay send
// what is pending, older runs' leftovers first: "sent <id>" after each send the queue accepted. At send number <kill at
// send> (from 1; 0 never) it prints "killing <id>" instead and kills itself with SIGKILL before the relay marks it sent;
// otherwise it relays until the test kills it.
//        Herald.CrashChild stream-sqlite <database file> <target position> <pace ms>
//        Herald.CrashChild stream-postgres <connection string> <schema> <target position> <pace ms>
// Runs the windowed aggregation of StreamCrashScenario over $all with its state in the same database, each event slowed
// by <pace ms>. Prints "resumed <checkpoint>" (the committed position it starts from) and "ready", then "progress <position>"
// whenever the committed position moves, and "caught-up <position>" once it reaches <target position>; it runs until the
// test kills it with SIGKILL, which it does mid-run (and once more after the last run has caught up).
//        Herald.CrashChild stream-rekey-sqlite <database file> <target position> <pace ms>
//        Herald.CrashChild stream-rekey-postgres <connection string> <schema> <target position> <pace ms>
// The same with the variant that re-keys after state, in four partitions (its repartition log in the same database).
//        Herald.CrashChild kill-model-sqlite <database file> <endpoint> <seed> workload|idle
// One process of the SQLite process-kill model (KillModelScenario): a host with the relay, the queue's handlers and an
// async projection on the file, and with "workload" a seeded stream of appends, units of work and sends; the parent kills it.
const string Usage = "usage: Herald.CrashChild sqlite <database file> <message count> | postgres <connection string> <schema> <message count> | saga-sqlite <database file> | saga-timeout-sqlite <database file>"
    + " | outbox-relay-sqlite <database file> <message count> <kill at send> | outbox-relay-postgres <connection string> <schema> <message count> <kill at send>"
    + " | stream-sqlite <database file> <target position> <pace ms> | stream-postgres <connection string> <schema> <target position> <pace ms>"
    + " | stream-rekey-sqlite <database file> <target position> <pace ms> | stream-rekey-postgres <connection string> <schema> <target position> <pace ms>"
    + " | kill-model-sqlite <database file> <endpoint> <seed> workload|idle";
KillingTransport? relay = null;
switch (args)
{
    case ["sqlite", var file, var count] when Count(count) is { } messages:
        await RunSqliteAsync(file, messages);
        break;
    case ["postgres", var connectionString, var schema, var count] when Count(count) is { } messages:
        await RunPostgresAsync(connectionString, schema, messages);
        break;
    case ["saga-sqlite", var file]:
        await RunSagaAsync(file);
        break;
    case ["saga-timeout-sqlite", var file]:
        await RunSagaTimeoutAsync(file);
        return 0;
    case ["outbox-relay-sqlite", var file, var count, var killAt] when Count(count) is { } messages && KillAt(killAt) is { } send:
        relay = await RunRelayAsync(
            h => h.UseSqlite(file).UseTransport(sp => new KillingTransport(SqliteQueueTransportFactory.Open(sp.GetRequiredService<SqliteEventStore>()), send)),
            services => services.GetRequiredService<SqliteEventStore>().BeginUnitOfWork,
            messages);
        break;
    case ["outbox-relay-postgres", var connectionString, var schema, var count, var killAt] when Count(count) is { } messages && KillAt(killAt) is { } send:
        // Created (and the schema migrated) here, so the transport the host holds is the queue itself, decorated.
        var queue = await PostgresQueueTransportFactory.CreateAsync(connectionString, o => o.Schema = schema);
        relay = await RunRelayAsync(
            h => h.UsePostgres(connectionString, o => o.Schema = schema).UseTransport(_ => new KillingTransport(queue, send)),
            services => services.GetRequiredService<PostgresEventStore>().BeginUnitOfWork,
            messages);
        break;
    case ["stream-sqlite", var file, var target, var pace] when Position(target) is { } position && Count(pace) is { } milliseconds:
        await RunStreamAsync(h => h.UseSqlite(file).UseSqliteStreamState(), position, milliseconds);
        return 0;
    case ["stream-postgres", var connectionString, var schema, var target, var pace] when Position(target) is { } position && Count(pace) is { } milliseconds:
        await RunStreamAsync(h => h.UsePostgres(connectionString, o => o.Schema = schema).UsePostgresStreamState(), position, milliseconds);
        return 0;
    case ["stream-rekey-sqlite", var file, var target, var pace] when Position(target) is { } position && Count(pace) is { } milliseconds:
        await RunStreamAsync(h => h.UseSqlite(file).UseSqliteStreamState(), position, milliseconds, rekey: true);
        return 0;
    case ["stream-rekey-postgres", var connectionString, var schema, var target, var pace] when Position(target) is { } position && Count(pace) is { } milliseconds:
        await RunStreamAsync(h => h.UsePostgres(connectionString, o => o.Schema = schema).UsePostgresStreamState(), position, milliseconds, rekey: true);
        return 0;
    case ["kill-model-sqlite", var file, var endpoint, var seed, var workload] when KillAt(seed) is { } number:
        await KillModelScenario.RunAsync(file, endpoint, number, workload == "workload");
        return 0;
    default:
        await Console.Error.WriteLineAsync(Usage);
        return 2;
}

Console.WriteLine("ready");
relay?.Start();

// Block until killed.
await Task.Delay(Timeout.Infinite);
return 0;

static async Task RunSqliteAsync(string file, int count)
{
    var store = await SqliteEventStore.OpenAsync(file);
    var outbox = new SqliteOutboxStore(store);
    await AddAsync(outbox, store.BeginUnitOfWork, count);
}

static async Task RunPostgresAsync(string connectionString, string schema, int count)
{
    var transport = new StalledTransport(new InMemoryTransport(InMemoryTransportOptions.Default, TimeProvider.System));
    var builder = Host.CreateApplicationBuilder();
    builder.Logging.ClearProviders();
    builder.Services.AddHerald(h => h
        .Configure(o =>
        {
            o.EndpointName = "crash-child";
            o.StartConsumer = false;
        })
        .UsePostgres(connectionString, o => o.Schema = schema)
        .UseTransport(_ => transport)
        .UseOutbox(o => o.PollInterval = TimeSpan.FromMilliseconds(50)));
    var host = builder.Build();
    await host.StartAsync();

    var store = host.Services.GetRequiredService<PostgresEventStore>();
    await AddAsync(host.Services.GetRequiredService<IOutboxStore>(), store.BeginUnitOfWork, count);

    // The relay fetches only while it leads (ILeaderElection), so from here the leadership is this process's.
    Console.WriteLine("sending " + await transport.FirstSend);
}

// The relay runs from the host's start; its sends wait for KillingTransport.Start, after "ready".
static async Task<KillingTransport> RunRelayAsync(Action<HeraldBuilder> useEngine, Func<IServiceProvider, Func<IUnitOfWork>> beginUnitOfWork, int count)
{
    var builder = Host.CreateApplicationBuilder();
    builder.Logging.ClearProviders();
    builder.Services.AddHerald(h =>
    {
        h.Configure(o =>
            {
                o.EndpointName = "crash-child";
                o.StartConsumer = false;
            })
            .UseOutbox(o =>
            {
                // Small batches: a kill lands more often between a batch's sends and its mark.
                o.BatchSize = 8;
                o.PollInterval = TimeSpan.FromMilliseconds(50);
            });
        useEngine(h);
    });
    var host = builder.Build();
    await host.StartAsync();
    await AddAsync(host.Services.GetRequiredService<IOutboxStore>(), beginUnitOfWork(host.Services), count);
    return (KillingTransport)host.Services.GetRequiredService<ITransport>();
}

static async Task AddAsync(IOutboxStore outbox, Func<IUnitOfWork> beginUnitOfWork, int count)
{
    var committed = NewMessages(count);
    var unitOfWork = beginUnitOfWork();
    await outbox.AddAsync(committed, unitOfWork);
    await unitOfWork.CommitAsync();
    Console.WriteLine("committed " + string.Join(',', committed.Select(m => m.Id)));

    // Never committed nor rolled back: the kill ends its transaction.
    var uncommitted = NewMessages(count);
    var open = beginUnitOfWork();
    await outbox.AddAsync(uncommitted, open);
    Console.WriteLine("uncommitted " + string.Join(',', uncommitted.Select(m => m.Id)));
}

static async Task RunSagaAsync(string file)
{
    var inStepTwo = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
    var definition = SagaDefinition.Create<CrashSagaData>("crash-saga", s => s
        .Step("one", context => Effect(context))
        .Step("two", async context =>
        {
            await Effect(context);
            inStepTwo.TrySetResult();
            await Task.Delay(Timeout.Infinite, context.CancellationToken);
        })
        .Step("three", context => Effect(context)));
    var builder = Host.CreateApplicationBuilder();
    builder.Logging.ClearProviders();
    builder.Services.AddHerald(h => h
        .Configure(o =>
        {
            o.EndpointName = "crash-child";
            o.StartConsumer = false;
        })
        .UseSqlite(file)
        .AddSaga(definition));
    var host = builder.Build();
    await host.StartAsync();
    _ = host.Services.GetRequiredService<SagaOrchestrator>().StartAsync(definition, "saga-1", new CrashSagaData());
    await inStepTwo.Task;
}

// Never returns: the timeout's send kills the process.
static async Task RunSagaTimeoutAsync(string file)
{
    var builder = Host.CreateApplicationBuilder();
    builder.Logging.ClearProviders();
    builder.Services.AddHerald(h => h
        .Configure(o => o.EndpointName = "crash-child")
        .UseSqlite(file)
        .UseTransport(sp => new KillOnSendTransport(SqliteQueueTransportFactory.Open(sp.GetRequiredService<SqliteEventStore>()), CrashOrders.TimeoutType))
        .AddMessageType<CrashOrderPlaced>()
        .AddMessageType<CrashPaymentTimedOut>()
        .AddSaga(CrashOrders.Machine()));
    var host = builder.Build();
    await host.StartAsync();
    Console.WriteLine("ready");
    await host.Services.GetRequiredService<IMessageBus>().SendAsync(new CrashOrderPlaced("order-1"));
    await Task.Delay(Timeout.Infinite);
}

// The step's visible effect: a row in the application's own table, in the step's unit of work.
static ValueTask Effect(SagaStepContext<CrashSagaData> context)
{
    context.Services.GetRequiredService<IUnitOfWork>().EnlistSqliteWrite(connection =>
    {
        using var insert = connection.CreateCommand();
        insert.CommandText = "INSERT INTO saga_effects (step) VALUES ($step)";
        insert.Parameters.AddWithValue("$step", context.StepName);
        insert.ExecuteNonQuery();
    });
    return ValueTask.CompletedTask;
}

// Never returns: the test kills it.
static async Task RunStreamAsync(Action<HeraldBuilder> persistence, long target, int paceMilliseconds, bool rekey = false)
{
    var builder = Host.CreateApplicationBuilder();
    builder.Logging.ClearProviders();
    builder.Services.AddHerald(h =>
    {
        h.Configure(o =>
        {
            o.EndpointName = "crash-child";
            o.StartConsumer = false;
        });
        persistence(h);
        StreamCrashScenario.AddMessageTypes(h);
    });
    var host = builder.Build();
    await host.StartAsync();

    var checkpoint = await host.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync("stream:" + StreamCrashScenario.Name) ?? 0;
    var processor = new StreamProcessor(
        StreamCrashScenario.Name,
        StreamCrashScenario.Topology(TimeSpan.FromMilliseconds(paceMilliseconds), rekey),
        host.Services,
        rekey ? StreamCrashScenario.RekeyOptions : StreamCrashScenario.Options);
    await processor.StartAsync();

    // With partitions there is no single checkpoint: the lowest committed position of the partitions and stages it loaded.
    checkpoint = rekey ? processor.CommittedPosition : checkpoint;
    Console.WriteLine("resumed " + checkpoint.ToString(CultureInfo.InvariantCulture));
    Console.WriteLine("ready");

    // Polls rather than hooks a commit: the kill comes a little after a line, wherever the processor is by then.
    var printed = checkpoint;
    var caughtUp = false;
    while (true)
    {
        if (processor.Completion.IsFaulted)
        {
            await Console.Error.WriteLineAsync("the processor failed: " + processor.Completion.Exception);
            Environment.Exit(3);
        }

        var committed = processor.CommittedPosition;
        if (committed != printed)
        {
            printed = committed;
            Console.WriteLine("progress " + committed.ToString(CultureInfo.InvariantCulture));
        }

        if (!caughtUp && committed >= target)
        {
            caughtUp = true;
            Console.WriteLine("caught-up " + committed.ToString(CultureInfo.InvariantCulture));
        }

        await Task.Delay(5);
    }
}

static long? Position(string text) =>
    long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var position) && position >= 1 ? position : null;

static int? Count(string text) =>
    int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var count) && count >= 1 ? count : null;

static int? KillAt(string text) =>
    int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var send) ? send : null;

static OutboxMessage[] NewMessages(int count) =>
    [.. Enumerable.Range(0, count).Select(i =>
    {
        var now = DateTimeOffset.UtcNow;
        var id = Guid.CreateVersion7(now);

        // The envelope carries the row's id, so the test can tell which rows were sent.
        return new OutboxMessage
        {
            Id = id,
            DestinationKind = OutboxDestinationKind.Queue,
            Destination = "crash-queue",
            CreatedAt = now,
            Envelope = new Envelope
            {
                MessageId = id,
                MessageType = "crash-test",
                Time = now,
                Body = Encoding.UTF8.GetBytes($"{{\"n\":{i}}}"),
            },
        };
    })];

/// <summary>The crash saga's data (nothing the test reads; the steps' effects are rows).</summary>
internal sealed class CrashSagaData
{
    public string Note { get; set; } = "crash";
}
