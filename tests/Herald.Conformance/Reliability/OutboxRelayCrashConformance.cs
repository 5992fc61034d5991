using System.Diagnostics;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Persistence;
using Herald.Processes;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;
using Xunit.Abstractions;

namespace Herald.Conformance.Reliability;

/// <summary>
/// Issue 10, the outbox duplicate window: the relay killed with SIGKILL at random points while it relays, including after
/// the broker accepted a message and before the outbox marked it sent. Each run of Herald.CrashChild (outbox-relay mode)
/// commits outbox messages and relays them, older runs' leftovers first, to the durable SQL queue of the same database;
/// every other run the test kills it after a random number of sends, and in the others the child kills itself right
/// after a chosen send returned (KillingTransport). Then a relay here finishes, and a consumer behind the inbox of the same
/// engine records one effect row per handled message in its unit of work. Every committed message must be in the queue at
/// least once (the self-killed sends at least twice: the window was hit), none uncommitted, every committed message
/// handled exactly once, and nothing dead-lettered.
/// </summary>
public abstract class OutboxRelayCrashConformance(ITestOutputHelper output)
{
    /// <summary>The queue the child's messages go to (fixed by Herald.CrashChild).</summary>
    protected const string Queue = "crash-queue";

    private const int MessagesPerRun = 40;
    private const int MaxRuns = 12;
    private const int MinRuns = 2;

    // Bounds the runs (each starts a process) on a loaded machine; the whole test stays well under 90 s.
    private static readonly TimeSpan RunsDeadline = TimeSpan.FromSeconds(45);
    private static readonly TimeSpan DrainDeadline = TimeSpan.FromSeconds(30);

    /// <summary>The child's arguments: the outbox-relay mode of this engine on the test's database.</summary>
    protected abstract string[] ChildArguments(int messages, int killAtSend);

    /// <summary>Configures the engine's store and its SQL queue on the test's database (the child's).</summary>
    protected abstract void UseEngine(HeraldBuilder herald);

    /// <summary>Counts the outbox's rows and those not marked sent, behind Herald's back.</summary>
    protected abstract Task<(long Rows, long Pending)> CountOutboxAsync();

    /// <summary>Counts the rows of <see cref="Queue"/> per message id: each is one delivery to come.</summary>
    protected abstract Task<IReadOnlyDictionary<Guid, int>> CountQueuedAsync();

    /// <summary>Counts the rows the queue moved to its own dead letters.</summary>
    protected abstract Task<long> CountQueueDeadLettersAsync();

    /// <summary>Creates the application's effect table in the database.</summary>
    protected abstract Task CreateEffectsTableAsync();

    /// <summary>Adds one effect row for the message in the unit of work (it commits with the inbox mark, or not at all).</summary>
    protected abstract ValueTask RecordEffectAsync(Guid messageId, IUnitOfWork unitOfWork, CancellationToken cancellationToken);

    /// <summary>Counts the effect rows per message id.</summary>
    protected abstract Task<IReadOnlyDictionary<Guid, int>> CountEffectsAsync();

    [Fact]
    public async Task RelayKilledAtRandomPoints_AlsoBetweenTheQueuesAcceptAndTheMark_DeliversEveryCommittedMessage_AndTheInboxHandlesEachOnce_Issue10()
    {
        var seed = Random.Shared.Next();
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);
        var committed = new List<Guid>();
        var uncommitted = new List<Guid>();
        var killedAfterSending = new List<Guid>();
        var runs = Stopwatch.StartNew();
        var run = 0;
        for (; run < MaxRuns && (run < MinRuns || runs.Elapsed < RunsDeadline); run++)
        {
            var selfKill = run % 2 == 1;
            var killAt = selfKill ? random.Next(1, MessagesPerRun + 1) : 0;
            using var child = await CrashChildProcess.StartAsync(ChildArguments(MessagesPerRun, killAt));
            Assert.Equal(MessagesPerRun, child.Committed.Count);
            committed.AddRange(child.Committed);
            uncommitted.AddRange(child.Uncommitted);
            int exit;
            string how;
            if (selfKill)
            {
                exit = await child.WaitForExitAsync();
                killedAfterSending.Add(Assert.NotNull(child.KilledAfterSending));

                // It killed itself at the chosen send (the older runs' leftovers went first, so it had that many to send).
                Assert.Equal(killAt - 1, child.Sent.Count);
                how = $"killed itself after send {killAt}";
            }
            else
            {
                var sends = random.Next(1, (MessagesPerRun / 2) + 1);
                Assert.True(await child.ReadSentAsync(sends), $"run {run}: the relay sends {sends} messages before it is killed");
                exit = await child.KillAsync();
                how = $"killed after reading send {sends}";
            }

            Assert.NotEqual(0, exit);

            // A run that killed itself did so between a send and its batch's mark, so it left something pending. The parent's
            // kill lands where it lands: the parent reads the child's progress lines late on some machines (seen lagging the
            // child by whole batches), so such a run may have finished relaying; it still counts for what is checked below.
            var (rows, pending) = await CountOutboxAsync();
            Assert.True(!selfKill || pending > 0, $"run {run} ({how}) left nothing pending of {rows} outbox rows: it killed itself after marking");
            output.WriteLine($"run {run}: {how}; {rows} outbox rows, {pending} pending, {runs.ElapsedMilliseconds} ms");
        }

        await FinishRelayAsync();
        var (outboxRows, _) = await CountOutboxAsync();
        Assert.Equal(committed.Count, outboxRows);

        var queued = await CountQueuedAsync();
        var lost = committed.Except(queued.Keys).ToList();
        Assert.True(lost.Count == 0, $"{lost.Count} committed messages never reached the queue, first {lost.FirstOrDefault()}");
        Assert.Empty(uncommitted.Intersect(queued.Keys));
        Assert.Empty(queued.Keys.Except(committed));
        foreach (var id in killedAfterSending)
        {
            // Sent before the kill, not marked: the next relay sent it again.
            Assert.True(queued[id] >= 2, $"{id}, sent just before its relay killed itself, is in the queue {queued[id]} time(s)");
        }

        var duplicated = queued.Where(q => q.Value > 1).Select(q => q.Key).ToHashSet();
        var byParentKills = duplicated.Except(killedAfterSending).Count();
        output.WriteLine(
            $"{run} runs, {committed.Count} committed, {queued.Values.Sum()} deliveries; {duplicated.Count} messages delivered more than once " +
            $"({killedAfterSending.Count} from the children's own kills, {byParentKills} from the test's kills)");

        var effects = await ConsumeAsync(queued.Values.Sum());
        Assert.Equal(committed.Order(), effects.Keys.Order());
        Assert.All(effects, e => Assert.Equal(1, e.Value));
    }

    /// <summary>A relay here sends what the killed ones left.</summary>
    private async Task FinishRelayAsync()
    {
        using var host = await StartAsync(h => h
            .Configure(o =>
            {
                o.EndpointName = "crash-relay";
                o.StartConsumer = false;
            })
            .UseOutbox(o => o.PollInterval = TimeSpan.FromMilliseconds(50)));
        await Eventually.UntilAsync(async () => (await CountOutboxAsync()).Pending == 0, "the relay here sends every pending message", DrainDeadline);
        await host.StopAsync();
    }

    /// <summary>Consumes every queued delivery behind the inbox; returns the effects, after checking nothing was dead-lettered.</summary>
    private async Task<IReadOnlyDictionary<Guid, int>> ConsumeAsync(int deliveries)
    {
        await CreateEffectsTableAsync();
        using var host = await StartAsync(h => h
            .Configure(o =>
            {
                o.EndpointName = Queue;
                o.MaxConcurrency = 4;
            })
            .AddMessageType<CrashTest>()
            .AddHandler<EffectHandler>(ServiceLifetime.Singleton)
            .UseInbox());
        await Eventually.UntilAsync(
            async () => (await CountQueuedAsync()).Count == 0, $"every one of the {deliveries} deliveries, duplicates too, is consumed", DrainDeadline);
        var deadLetters = await host.Services.GetRequiredService<IDeadLetterStore>().CountAsync(DeadLetterQuery.All);
        await host.StopAsync();

        Assert.Equal(0L, deadLetters);
        Assert.Equal(0L, await CountQueueDeadLettersAsync());
        return await CountEffectsAsync();
    }

    private async Task<IHost> StartAsync(Action<HeraldBuilder> configure)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(this);
        builder.Services.AddHerald(h =>
        {
            configure(h);
            UseEngine(h);
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    /// <summary>The child's messages: type "crash-test", body <c>{"n":i}</c>, message id the outbox row's.</summary>
    [MessageType("crash-test")]
    public sealed record CrashTest(int N);

    /// <summary>Records the handled message's effect in the attempt's unit of work.</summary>
    public sealed class EffectHandler(OutboxRelayCrashConformance suite) : IMessageHandler<CrashTest>
    {
        public ValueTask HandleAsync(CrashTest message, MessageContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(context);
            return suite.RecordEffectAsync(context.Envelope.MessageId, context.UnitOfWork, cancellationToken);
        }
    }
}
