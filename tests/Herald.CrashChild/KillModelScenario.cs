using System.Collections.Concurrent;
using Herald.EventSourcing;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Persistence;
using Herald.Projections;
using Herald.Reliability.Outbox;
using Herald.Sqlite;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Transport;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.CrashChild;

/// <summary>
/// The child of the SQLite process-kill model (Herald.Sqlite.Tests, Faults/ProcessKillModelTests): one host on the shared
/// file with the outbox relay sending to the file's queue, handlers there that succeed, hold past their lease or fail, and
/// an async projection; with a workload, it also appends (directly and in units of work with outbox rows) and sends to the
/// queue, seeded. Every line is written (and flushed) before or after the act it names, so the parent knows what returned:
/// "append-begin E" / "append-done E", "uow-begin E|R" / "uow-done E|R", "send-begin M" / "send-done M" ("-failed" when it
/// threw), "relayed M" once the queue accepted a relay's send, "handled M" / "threw M" from the handler. Now and then it
/// kills itself with SIGKILL at an exact point ("killing"): inside a unit of work's commit, before COMMIT, and after a
/// relay's send starts or once it returned, before the relay marks the row sent. Otherwise it runs until the parent kills it.
/// </summary>
internal static class KillModelScenario
{
    public const string ProjectionName = "kill-model-tallies";

    private static readonly ReadModelTable<Tally> Table = new("kill_model_tallies");
    private static readonly string[] Keys = ["k0", "k1", "k2", "k3", "k4"];

    public static async Task RunAsync(string file, string endpoint, int seed, bool workload)
    {
        var random = new Random(seed);
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h => h
            .Configure(o =>
            {
                o.EndpointName = endpoint;
                o.MaxConcurrency = 16;
                o.Prefetch = 8;
            })
            .UseSqlite(file)
            .UseTransport(sp => new RelayTransport(
                SqliteQueueTransportFactory.Open(sp.GetRequiredService<SqliteEventStore>(), o =>
                {
                    o.LeaseDuration = TimeSpan.FromSeconds(1);
                    o.PollInterval = TimeSpan.FromMilliseconds(50);
                }),
                workload ? new Random(seed + 1) : null))
            .AddMessageType<Added>()
            .AddMessageType<WorkItem>()
            .AddHandler<WorkHandler>(ServiceLifetime.Singleton)
            .ConfigureRetries(r => r.Immediate(1).Delayed(1, TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(200)))
            .AddProjection(new Tallies())
            .ConfigureProjections(o => o.RetryInterval = TimeSpan.FromMilliseconds(100))
            .UseOutbox(o =>
            {
                o.BatchSize = 4;
                o.PollInterval = TimeSpan.FromMilliseconds(50);
            }));
        var host = builder.Build();
        await host.StartAsync();
        Console.WriteLine("ready");
        if (!workload)
        {
            // Runs the relay, the handlers and the projection until the parent kills it.
            await Task.Delay(Timeout.Infinite);
        }

        var store = host.Services.GetRequiredService<SqliteEventStore>();
        var events = host.Services.GetRequiredService<IEventStore>();
        var outbox = host.Services.GetRequiredService<IOutboxStore>();
        var factory = host.Services.GetRequiredService<EnvelopeFactory>();
        var queue = ((RelayTransport)host.Services.GetRequiredService<ITransport>()).Inner;
        while (true)
        {
            var op = random.Next(10);
            var key = Keys[random.Next(Keys.Length)];
            if (op < 3)
            {
                var batch = Enumerable.Range(0, random.Next(1, 4)).Select(_ => factory.Create(new Added(key, random.Next(1, 100)))).ToArray();
                await RunAsync("append", Ids(batch), () => events.AppendAsync("kmodel-" + key, ExpectedVersion.Any, batch).AsTask());
            }
            else if (op < 7)
            {
                var batch = Enumerable.Range(0, random.Next(1, 3)).Select(_ => factory.Create(new Added(key, random.Next(1, 100)))).ToArray();
                var rows = Enumerable.Range(0, random.Next(1, 3)).Select(_ => Row(endpoint, factory.Create(new WorkItem(Behaviour(random))))).ToArray();
                var killInCommit = random.Next(25) == 0;
                await RunAsync("uow", Ids(batch) + "|" + string.Join(',', rows.Select(r => r.Id)), async () =>
                {
                    await using var unitOfWork = store.BeginUnitOfWork();
                    await store.AppendAsync("kmodel-" + key, ExpectedVersion.Any, batch, unitOfWork);
                    await outbox.AddAsync(rows, unitOfWork);
                    if (killInCommit)
                    {
                        // Runs inside the writer's transaction after the unit's writes, before COMMIT.
                        unitOfWork.EnlistSqliteWrite(_ => SelfKill.Now(rows[0].Id));
                    }

                    await unitOfWork.CommitAsync();
                });
            }
            else
            {
                var envelope = factory.Create(new WorkItem(Behaviour(random)));
                await RunAsync("send", envelope.MessageId.ToString(), () => queue.SendAsync(endpoint, envelope).AsTask());
            }

            // Pacing of the workload, not a wait for anything.
            await Task.Delay(random.Next(0, 30));
        }
    }

    private static async Task RunAsync(string kind, string ids, Func<Task> action)
    {
        Console.WriteLine($"{kind}-begin {ids}");
        try
        {
            await action();
            Console.WriteLine($"{kind}-done {ids}");
        }
        catch (Exception ex)
        {
            Console.WriteLine($"{kind}-failed {ids} {ex.GetType().Name}: {ex.Message.Split('\n')[0]}");
        }
    }

    private static string Ids(Envelope[] envelopes) => string.Join(',', envelopes.Select(e => e.MessageId));

    private static string Behaviour(Random random) => random.Next(10) switch
    {
        < 5 => "ok",
        < 7 => "hold",
        < 9 => "flaky",
        _ => "poison",
    };

    private static OutboxMessage Row(string endpoint, Envelope envelope) => new()
    {
        Id = envelope.MessageId,
        DestinationKind = OutboxDestinationKind.Queue,
        Destination = endpoint,
        Envelope = envelope,
        CreatedAt = DateTimeOffset.UtcNow,
    };

    /// <summary>The relay's transport: "relayed M" once the queue has the message; now and then a kill before the mark.</summary>
    private sealed class RelayTransport(ITransport inner, Random? kills) : ITransport
    {
        public ITransport Inner => inner;

        public string Name => inner.Name;

        public TransportCapabilities Capabilities => inner.Capabilities;

        public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) => inner.DeclareQueueAsync(queue, cancellationToken);

        public ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default) => inner.BindAsync(topic, queue, cancellationToken);

        public async ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
        {
            MaybeKill(envelope.MessageId);
            await inner.SendAsync(queue, envelope, options, cancellationToken);
            Relayed(envelope.MessageId);
        }

        public async ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
        {
            MaybeKill(envelope.MessageId);
            await inner.PublishAsync(topic, envelope, options, cancellationToken);
            Relayed(envelope.MessageId);
        }

        public ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            inner.ConsumeAsync(queue, options, handler, cancellationToken);

        public ValueTask DisposeAsync() => inner.DisposeAsync();

        private void Relayed(Guid id)
        {
            Console.WriteLine("relayed " + id);

            // The relay never goes on to the mark.
            MaybeKill(id);
        }

        // A crash while a send is in flight (before it) or once it returned (before the mark).
        private void MaybeKill(Guid id)
        {
            bool kill;
            lock (inner)
            {
                kill = kills?.Next(30) == 0;
            }

            if (kill)
            {
                SelfKill.Now(id);
            }
        }
    }

    [MessageType("kill-model-added")]
    public sealed record Added(string Key, int Amount);

    [MessageType("kill-model-work")]
    public sealed record WorkItem(string Behaviour);

    /// <summary>The read model: per key, the sum of the amounts and the positions applied, in order.</summary>
    public sealed record Tally(string Key, long Sum, long[] Positions);

    private sealed class WorkHandler : IMessageHandler<WorkItem>
    {
        private readonly ConcurrentDictionary<Guid, int> _attempts = new();

        public async ValueTask HandleAsync(WorkItem message, MessageContext context, CancellationToken cancellationToken)
        {
            var id = context.Envelope.MessageId;
            var before = _attempts.AddOrUpdate(id, 1, (_, n) => n + 1) - 1;
            if (message.Behaviour == "poison" || (message.Behaviour == "flaky" && before == 0 && context.Envelope.DeliveryAttempt == 1))
            {
                Console.WriteLine("threw " + id);
                throw new InvalidOperationException($"{message.Behaviour} work");
            }

            if (message.Behaviour == "hold")
            {
                // Past the queue's 1 s lease: its renewals must keep it.
                await Task.Delay(TimeSpan.FromMilliseconds(1300), cancellationToken);
            }

            Console.WriteLine("handled " + id);
        }
    }

    private sealed class Tallies : Projection
    {
        public Tallies()
            : base(ProjectionName)
        {
            Table(KillModelScenario.Table);
            On<Added>(async (e, context, _) =>
            {
                var position = context.Position!.Value;
                await context.UpdateAsync(KillModelScenario.Table, e.Key, t => t is null
                    ? new Tally(e.Key, e.Amount, [position])
                    : t with { Sum = t.Sum + e.Amount, Positions = [.. t.Positions, position] });
            });
        }
    }
}
