using System.Collections.Concurrent;
using System.Diagnostics;
using Herald.Conformance;
using Herald.Conformance.Faults;
using Herald.Handling;
using Herald.Messages;
using Herald.Processes.Servers;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.Redis.Tests.Faults;

/// <summary>
/// Issue 10, faults under load: a private Redis server (append-only file, fsync always) is killed and started again while
/// a host handles messages with the Redis inbox on and each handler charges once through an idempotency key on Redis.
/// The queue and the units of work are SQLite's, which the restart does not touch. Afterwards every message completed
/// exactly once, every charge ran exactly once, and nothing is dead-lettered.
/// </summary>
public sealed class RedisRestartTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int Messages = 800;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private readonly FaultScene _scene = new(output);
    private readonly string _endpoint = "redisfault-" + Guid.NewGuid().ToString("N")[..8];
    private RedisServer? _server;

    public async Task InitializeAsync() => _scene.Server = _server = await RedisServer.StartAsync();

    public Task DisposeAsync() => _scene.DisposeAsync().AsTask();

    [Fact]
    public async Task ServerKilledAndRestarted_WhileInboxMarksAndIdempotencyKeysAreInUse_CompletesEachMessageOnce_AndChargesOnce_Issue10()
    {
        var clock = Stopwatch.StartNew();
        var probe = new Probe(Messages / 4);
        var host = await StartHostAsync(probe);
        var bus = host.Services.GetRequiredService<IMessageBus>();
        for (var i = 0; i < Messages; i++)
        {
            await bus.SendAsync(new Charge(i));
        }

        // Kill Redis once the handlers are busy, and start it again once work has failed on it: an attempt failed twice,
        // or a charge that ran could not store its result and is tried again while its lock holds (until Redis answers).
        // Waiting only for a second failed attempt waited the whole lock timeout when all four handlers were storing
        // results at the kill.
        await probe.Busy.Task.WaitAsync(Deadline);
        output.WriteLine($"{clock.Elapsed}: killing Redis with {probe.Completed.Count} messages completed");
        var failing = Task.WhenAny(_scene.Log.WhenLoggedAsync("failed on attempt 2"), _scene.Log.WhenLoggedAsync("while its lock holds"));
        await _server!.StopAsync();
        await (await failing.WaitAsync(Deadline));
        output.WriteLine($"{clock.Elapsed}: {probe.Completed.Count} completed, work failed on the stopped server; starting Redis again");
        await _server.StartAgainAsync();
        output.WriteLine($"{clock.Elapsed}: Redis is back");

        await Eventually.UntilAsync(() => probe.Completed.Count == Messages, "every message completes", Deadline);
        output.WriteLine($"{clock.Elapsed}: drained; {probe.Retried} attempts after the first reached the handler");

        Assert.All(probe.Completed, pair => Assert.True(pair.Value == 1, $"message {pair.Key} completed {pair.Value} times"));
        Assert.Equal(Enumerable.Range(0, Messages), probe.Charges.Keys.Order());
        Assert.All(probe.Charges, pair => Assert.True(pair.Value == 1, $"charge {pair.Key} ran {pair.Value} times"));
        Assert.Equal(Messages, probe.Completed.Count);
        Assert.Equal(0L, await host.Services.GetRequiredService<IDeadLetterStore>().CountAsync(DeadLetterQuery.All));
    }

    private Task<IHost> StartHostAsync(Probe probe)
    {
        var database = Path.Combine(_scene.Folder, "herald.db");
        return _scene.StartHostAsync(services => services.AddSingleton(probe).AddHerald(h => h
            .Configure(o =>
            {
                o.EndpointName = _endpoint;
                o.MaxConcurrency = 4;
            })
            .UseSqlite(database)
            .UseSqliteQueue(database)
            .UseRedis(_server!.Configuration, o =>
            {
                o.KeyPrefix = _endpoint + ":";
                o.InboxPendingTimeout = TimeSpan.FromSeconds(2);
            })
            .UseInbox()
            .AddMessageType<Charge>()
            .Route<Charge>(_endpoint)
            .AddHandler<ChargeHandler>(ServiceLifetime.Singleton)
            .ConfigureRetries(r => r.Immediate(1).Delayed(30, TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1)))));
    }

    [MessageType("redisfault-charge")]
    public sealed record Charge(int N);

    /// <summary>Counts completions per message, charges per number and retried attempts.</summary>
    public sealed class Probe(int busyAt)
    {
        private int _retried;

        public ConcurrentDictionary<Guid, int> Completed { get; } = new();

        public ConcurrentDictionary<int, int> Charges { get; } = new();

        public TaskCompletionSource Busy { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Retried => Volatile.Read(ref _retried);

        public void Retrying() => Interlocked.Increment(ref _retried);

        public void Complete(Guid messageId)
        {
            Completed.AddOrUpdate(messageId, 1, (_, n) => n + 1);
            if (Completed.Count >= busyAt)
            {
                Busy.TrySetResult();
            }
        }
    }

    /// <summary>Charges once per number through an idempotency key; its completion counts when its unit of work commits.</summary>
    public sealed class ChargeHandler(Probe probe, IdempotencyService idempotency) : IMessageHandler<Charge>
    {
        public async ValueTask HandleAsync(Charge message, MessageContext context, CancellationToken cancellationToken)
        {
            if (context.Attempt > 1)
            {
                probe.Retrying();
            }

            var id = context.Envelope.MessageId;
            context.UnitOfWork.OnCommitted(_ =>
            {
                probe.Complete(id);
                return ValueTask.CompletedTask;
            });
            await idempotency.ExecuteAsync(
                "charge-" + message.N,
                _ => ValueTask.FromResult(probe.Charges.AddOrUpdate(message.N, 1, (_, n) => n + 1)),
                TimeSpan.FromMinutes(10),
                cancellationToken);
        }
    }
}
