using System.Text;
using Herald.Conformance;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Streams.Tests;

/// <summary>Fails the first attempt of each click on the page "flaky", after the stream has seen it in the same unit of work.</summary>
public sealed class FlakyClickHandler : IMessageHandler<Click>
{
    private static int _attempts;

    public static int Attempts => Volatile.Read(ref _attempts);

    public static void Reset() => Volatile.Write(ref _attempts, 0);

    public ValueTask HandleAsync(Click message, MessageContext context, CancellationToken cancellationToken)
    {
        if (message.Page == "flaky" && Interlocked.Increment(ref _attempts) == 1)
        {
            throw new InvalidOperationException("The first attempt of the flaky click fails.");
        }

        return ValueTask.CompletedTask;
    }
}

[Collection(nameof(FlakyClickHandler))]
public sealed class TransportSourceTests : IDisposable
{
    private readonly string _file = TestSqlite.NewFile("transport");

    [Fact]
    public async Task InMemoryTransport_FeedsTheStreamThroughTheEndpointChain_RetriesInboxAndDeadLettersApply() =>
        await RunAsync(h => h.UseInbox(), restart: false);

    [Fact]
    public async Task SqliteQueue_FeedsTheStreamThroughTheEndpointChain_AndTheStateCommitsWithTheInboxMark() =>
        await RunAsync(h => h.UseSqlite(_file).UseSqliteQueue(_file).UseSqliteStreamState().UseInbox(), restart: true);

    /// <summary>
    /// From a transport, an event that one branch with state takes and another refuses fails as a whole: nothing of it
    /// commits, the endpoint dead-letters it once, and a retry of that dead letter runs both branches again on state
    /// that never held the first run, so the branch that had succeeded counts it at most once.
    /// </summary>
    [Fact]
    public async Task AClickOneBranchTakesAndAnotherRefuses_IsDeadLetteredOnce_AndItsRetryDoesNotCountItTwiceInTheBranchThatTookIt()
    {
        using var host = await ProcessorScenario.StartHostAsync(h => h
            .AddMessageType<Click>("stream-test-click")
            .AddStream(
                "two-branch-clicks",
                b =>
                {
                    var users = b.Stream<Click>().GroupBy(c => c.User);
                    users.Count("taken");
                    users.Aggregate(() => 0L, (_, c, n) => c.Page == "bad" ? throw new InvalidOperationException("The strict branch refuses bad.") : n + 1, "strict");
                },
                new StreamProcessorOptions { Source = StreamSource.Transport, Partitions = 2 })
            .ConfigureRetries(r => r.Immediate(2).Delayed(0, TimeSpan.Zero, TimeSpan.Zero)));
        var bus = host.Services.GetRequiredService<IMessageBus>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        var bad = envelopes.Create(new Click("ann", "bad"));
        await host.Services.GetRequiredService<ITransport>().PublishAsync("stream-test-click", bad);
        await bus.PublishAsync(new Click("ann", "home"));
        var processor = host.Services.GetRequiredService<StreamProcessors>()["two-branch-clicks"];
        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        async Task<IReadOnlyList<DeadLetter>> OfBadAsync() =>
            [.. (await deadLetters.ListAsync(new DeadLetterQuery())).Where(d => d.Envelope.MessageId == bad.MessageId)];
        await Eventually.UntilAsync(async () => await processor.QueryAsync<string, long>("strict", "ann") == 1, "the good click is counted");
        await Eventually.UntilAsync(async () => (await OfBadAsync()).Count == 1, "the bad click is dead-lettered");

        var first = Assert.Single(await OfBadAsync());
        Assert.Equal(DeadLetterOrigin.Endpoint, first.Origin);
        // Queries read memory, which a failed event may have changed until the next event reloads the committed state.
        await bus.PublishAsync(new Click("ann", "after"));
        await Eventually.UntilAsync(async () => await processor.QueryAsync<string, long>("strict", "ann") == 2, "the click after it is counted");
        Assert.Equal(2L, await processor.QueryAsync<string, long>("taken", "ann"));

        Assert.Equal(DeadLetterRetryOutcome.Retried, await host.Services.GetRequiredService<DeadLetterManager>().RetryAsync(first.Id));
        await Eventually.UntilAsync(async () => (await OfBadAsync()) is [var again] && again.Id != first.Id, "the retried click is dead-lettered again");
        await bus.PublishAsync(new Click("ann", "last"));
        await Eventually.UntilAsync(async () => await processor.QueryAsync<string, long>("strict", "ann") == 3, "the last click is counted");
        Assert.Equal(3L, await processor.QueryAsync<string, long>("taken", "ann"));
        await host.StopAsync();
    }

    public void Dispose() => TestSqlite.Delete(_file);

    private static async Task<IHost> StartAsync(Action<HeraldBuilder> engine) => await ProcessorScenario.StartHostAsync(h =>
    {
        engine(h);
        // The stream's handler is registered first, so it runs first in each attempt: the flaky handler fails after it.
        h.AddMessageType<Click>("stream-test-click")
            .AddStream(
                "clicks",
                b => b.Stream<Click>().GroupBy(c => c.User).Count("per-user"),
                new StreamProcessorOptions { Source = StreamSource.Transport, Partitions = 2 })
            .AddHandler<FlakyClickHandler>()
            .ConfigureRetries(r => r.Immediate(2));
    });

    private static async Task RunAsync(Action<HeraldBuilder> engine, bool restart)
    {
        FlakyClickHandler.Reset();
        var host = await StartAsync(engine);
        try
        {
            var bus = host.Services.GetRequiredService<IMessageBus>();
            await bus.PublishAsync(new Click("ann", "home"));
            await bus.PublishAsync(new Click("ann", "flaky")); // fails once after the stream counted it: the retry must not count it again
            await bus.PublishAsync(new Click("bob", "home"));

            // The same message twice (a redelivery): the inbox takes it once.
            var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
            var transport = host.Services.GetRequiredService<ITransport>();
            var twice = envelopes.Create(new Click("bob", "twice"));
            await transport.PublishAsync("stream-test-click", twice);
            await transport.PublishAsync("stream-test-click", twice);

            // A body that cannot be decoded: the chain dead-letters it, the stream goes on.
            var broken = envelopes.Create(new Click("cat", "broken")) with { Body = Encoding.UTF8.GetBytes("{not json") };
            await transport.PublishAsync("stream-test-click", broken);
            await bus.PublishAsync(new Click("cat", "home"));

            var processor = host.Services.GetRequiredService<StreamProcessors>()["clicks"];
            await Eventually.UntilAsync(
                async () => await processor.QueryAsync<string, long>("per-user", "cat") == 1,
                "the last click is counted");
            var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
            await Eventually.UntilAsync(
                async () => (await deadLetters.ListAsync(new DeadLetterQuery())).Any(d => d.Envelope.MessageId == broken.MessageId),
                "the undecodable click is dead-lettered");

            Assert.Equal(2, FlakyClickHandler.Attempts);
            Assert.Equal(2L, await processor.QueryAsync<string, long>("per-user", "ann"));
            Assert.Equal(2L, await processor.QueryAsync<string, long>("per-user", "bob"));
            Assert.Equal(Cause(DeadLetterCause.Undecodable), Cause((await deadLetters.ListAsync(new DeadLetterQuery())).Single(d => d.Envelope.MessageId == broken.MessageId).Cause));

            if (restart)
            {
                // A new host on the same file loads the committed state.
                await host.StopAsync();
                host.Dispose();
                host = await StartAsync(engine);
                await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new Click("ann", "again"));
                var resumed = host.Services.GetRequiredService<StreamProcessors>()["clicks"];
                await Eventually.UntilAsync(
                    async () => await resumed.QueryAsync<string, long>("per-user", "ann") == 3,
                    "the click after the restart counts on the committed state");
                Assert.Equal(2L, await resumed.QueryAsync<string, long>("per-user", "bob"));
            }
        }
        finally
        {
            await host.StopAsync();
            host.Dispose();
        }
    }

    private static string Cause(DeadLetterCause cause) => cause.ToString();
}
