using Herald.EventSourcing;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit;

namespace Herald.Conformance.Projections;

/// <summary>
/// A retry of a projection's dead letter applies its event to the projection again, in a unit of work of the projection's
/// read models, and leaves its checkpoint where it is; the dead letter goes only once that committed, and stays (its
/// retry count raised) when it fails again. A retry of all dead letters takes each back to where it came from.
/// </summary>
public abstract partial class ProjectionConformance
{
    [Fact]
    public async Task RetryingAProjectionsDeadLetter_OnceItsHandlerIsFixed_AppliesTheEvent_AndThenDeletesTheDeadLetter()
    {
        // Regression (projection dead letters): a retry sent the event to a transport queue named after the projection,
        // which nothing consumes, and deleted the dead letter as if retried; the read model never had the event.
        var store = NewStore();
        var broken = new Breakable(7);
        using var host = await StartAsync(store, new Tallies(broken.ThrowWhileBroken), noRetries: true);
        await ApplyAsync(host, "tally-retry", "fixed", 1, 7, 100);
        var checkpoint = await host.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync(Tallies.ProjectionName);
        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = Tallies.ProjectionName }));
        Assert.Equal(DeadLetterOrigin.Projection, deadLetter.Origin);
        var readModels = host.Services.GetRequiredService<ReadModels>();
        Assert.Equal(new Tally("fixed", 101, 2), await readModels.GetAsync(Tallies.Table, "fixed"));

        var attempts = broken.Attempts;
        broken.Fix();
        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        Assert.Equal(DeadLetterRetryOutcome.Retried, await manager.RetryAsync(deadLetter.Id));

        Assert.Equal(new Tally("fixed", 108, 3), await readModels.GetAsync(Tallies.Table, "fixed"));
        Assert.Null(await manager.GetAsync(deadLetter.Id));
        Assert.Equal(checkpoint, await host.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync(Tallies.ProjectionName));
        Assert.Equal(attempts + 1, broken.Attempts);
        await host.StopAsync();
    }

    [Fact]
    public async Task TwoHostsRetryingOneProjectionsDeadLetterAtOnce_ApplyItsEventOnce_AndTheSecondFindsItGone()
    {
        // Regression (projection dead letters, exactly-once retry): the dead letter was deleted after the retry's unit of work
        // committed, so two processes that both read it before either deleted it both applied its event (the tally counted 7
        // twice), and a delete that failed after the commit left it to be applied again by the next retry.
        var store = NewStore();
        var broken = new Breakable(7);
        var meeting = new Meeting(2);
        async Task Apply(TallyAdded e, ProjectionContext context)
        {
            await broken.ThrowWhileBroken(e, context);
            if (e.Amount == 7 && broken.IsFixed)
            {
                // Both retries have read the dead letter and run the handler before either goes on to its commit.
                await meeting.ArriveAsync();
            }
        }

        using var first = await StartAsync(store, new Tallies(Apply), noRetries: true);
        await ApplyAsync(first, "tally-retry-twice", "twice", 1, 7, 100);
        using var second = await StartAsync(store, new Tallies(Apply), noRetries: true);
        var deadLetter = Assert.Single(await first.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = Tallies.ProjectionName }));
        var attempts = broken.Attempts;

        broken.Fix();
        var outcomes = await Task.WhenAll(
            first.Services.GetRequiredService<DeadLetterManager>().RetryAsync(deadLetter.Id).AsTask(),
            second.Services.GetRequiredService<DeadLetterManager>().RetryAsync(deadLetter.Id).AsTask()).WaitAsync(Eventually.DefaultTimeout);

        Assert.Equal(attempts + 2, broken.Attempts);
        Assert.Equal([DeadLetterRetryOutcome.Retried, DeadLetterRetryOutcome.NotFound], outcomes.Order());
        Assert.Equal(new Tally("twice", 108, 3), await first.Services.GetRequiredService<ReadModels>().GetAsync(Tallies.Table, "twice"));
        Assert.Null(await first.Services.GetRequiredService<IDeadLetterStore>().GetAsync(deadLetter.Id));
        await second.StopAsync();
        await first.StopAsync();
    }

    [Fact]
    public async Task RetryingAProjectionsDeadLetter_ThatFailsAgain_WritesNothing_AndKeepsTheDeadLetterWithTheRetryError()
    {
        var store = NewStore();
        using var host = await StartAsync(store, new Tallies(), noRetries: true);
        await ApplyAsync(host, "tally-retry-again", "again", 2, 13);
        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        var deadLetter = Assert.Single(await deadLetters.ListAsync(new DeadLetterQuery { Endpoint = Tallies.ProjectionName }));

        // Amount 13 writes its change, then throws: the retry's unit of work is rolled back.
        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        Assert.Equal(DeadLetterRetryOutcome.Failed, await manager.RetryAsync(deadLetter.Id));

        Assert.Equal(new Tally("again", 2, 1), await host.Services.GetRequiredService<ReadModels>().GetAsync(Tallies.Table, "again"));
        var kept = await manager.GetAsync(deadLetter.Id);
        Assert.NotNull(kept);
        Assert.Equal(1, kept.RetryCount);
        Assert.Contains("unlucky amount", kept.LastRetryError, StringComparison.Ordinal);
        Assert.Equal(deadLetter.ErrorMessage, kept.ErrorMessage);
        Assert.Single(await deadLetters.ListAsync(DeadLetterQuery.All));
        await host.StopAsync();
    }

    [Fact]
    public async Task RetryingAllDeadLetters_SendsAQueuesBack_AndAppliesAProjectionsToIt()
    {
        var store = NewStore();
        var broken = new Breakable(7);
        var transport = new RecordingTransport(new InMemoryTransport());
        using var host = await StartAsync(store, new Tallies(broken.ThrowWhileBroken), noRetries: true, configure: h => h.UseTransport(_ => transport));
        await ApplyAsync(host, "tally-retry-all", "all", 7, 10);
        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        var projected = Assert.Single(await deadLetters.ListAsync(DeadLetterQuery.All));

        // A message a handler of an endpoint's queue gave up on.
        var queued = Added(host, "queued", 5);
        await deadLetters.AddAsync(HandMadeDeadLetter(queued, "conformance-orders"));

        broken.Fix();
        var result = await host.Services.GetRequiredService<DeadLetterManager>().RetryAllAsync();

        Assert.Equal(new DeadLetterRetryResult(2, 0), result);
        Assert.Empty(await deadLetters.ListAsync(DeadLetterQuery.All));
        Assert.Equal(new Tally("all", 17, 2), await host.Services.GetRequiredService<ReadModels>().GetAsync(Tallies.Table, "all"));
        var sent = Assert.Single(transport.Sent);
        Assert.Equal(("conformance-orders", queued.MessageId), (sent.Destination, sent.Envelope.MessageId));
        Assert.DoesNotContain(transport.Sent, s => s.Envelope.MessageId == projected.Envelope.MessageId);
        await host.StopAsync();
    }

    [Fact]
    public async Task RetryingAProjectionsDeadLetter_AfterARebuildReplayedItsEvent_IsRefused_AndAppliesItNoSecondTime()
    {
        // Regression (audit 42 of the projections): the retry applied the dead letter's event to the generation serving
        // now, whichever one the event had failed in. A rebuild after the handler's fix had replayed the event into the new
        // generation already, so the retry applied it a second time there (the tally counted 7 twice).
        var store = NewStore();
        var broken = new Breakable(7);
        using var host = await StartAsync(store, new Tallies(broken.ThrowWhileBroken), noRetries: true);
        await ApplyAsync(host, "tally-retry-rebuilt", "rebuilt", 1, 7, 100);
        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = Tallies.ProjectionName }));

        broken.Fix();
        var projections = host.Services.GetRequiredService<ProjectionManager>();
        await projections.RebuildAsync(Tallies.ProjectionName).WaitAsync(TimeSpan.FromSeconds(60));
        var readModels = host.Services.GetRequiredService<ReadModels>();
        Assert.Equal(new Tally("rebuilt", 108, 3), await readModels.GetAsync(Tallies.Table, "rebuilt"));

        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        Assert.Equal(DeadLetterRetryOutcome.Refused, await manager.RetryAsync(deadLetter.Id));

        Assert.Equal(new Tally("rebuilt", 108, 3), await readModels.GetAsync(Tallies.Table, "rebuilt"));
        Assert.Contains("generation 1, which a rebuild replaced", (await manager.GetAsync(deadLetter.Id))!.LastRetryError, StringComparison.Ordinal);
        await host.StopAsync();
    }

    [Fact]
    public async Task RetryingAProjectionsDeadLettersWhileARebuildRuns_AppliesTheEventToTheGenerationItFailedIn_SoTheRebuiltOneKeepsIt()
    {
        // Regression (audit 42 of the projections): the rebuild's dead letter of an event was the live generation's one (one
        // id for every generation), so a retry while the rebuild ran applied the event to the generation serving then and
        // deleted the only dead letter; the rebuilt generation, which had failed the event too, switched in without it.
        var store = NewStore();
        var broken = new Breakable(7);
        var (blocked, gate) = (new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously), new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        async Task Apply(TallyAdded e, ProjectionContext context)
        {
            await broken.ThrowWhileBroken(e, context);
            if (context.Generation > 1 && e.Amount == 100)
            {
                // The rebuild stops past the event it failed, until the test has retried the dead letters.
                blocked.TrySetResult();
                await gate.Task.WaitAsync(Eventually.DefaultTimeout);
            }
        }

        using var host = await StartAsync(store, new Tallies(Apply), noRetries: true);
        await ApplyAsync(host, "tally-retry-rebuilding", "rebuilding", 1, 7, 100);
        var projections = host.Services.GetRequiredService<ProjectionManager>();
        var rebuild = projections.RebuildAsync(Tallies.ProjectionName);
        await blocked.Task.WaitAsync(Eventually.DefaultTimeout);

        broken.Fix();
        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();

        // One dead letter of each generation's failure of the event.
        Assert.Equal(2, (await deadLetters.ListAsync(new DeadLetterQuery { Endpoint = Tallies.ProjectionName })).Count);
        var result = await host.Services.GetRequiredService<DeadLetterManager>().RetryAllAsync();
        gate.TrySetResult();
        await rebuild.WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(0, result.Failed);
        Assert.Empty(await deadLetters.ListAsync(DeadLetterQuery.All));
        Assert.Equal(2, (await projections.GetStatusAsync(Tallies.ProjectionName)).Generation);
        Assert.Equal(new Tally("rebuilding", 108, 3), await host.Services.GetRequiredService<ReadModels>().GetAsync(Tallies.Table, "rebuilding"));
        await host.StopAsync();
    }

    [Fact]
    public async Task RetryingTheDeadLetterOfAProjectionThisHostDoesNotRegister_IsRefused_AndKeepsIt()
    {
        var store = NewStore();
        using var host = await StartAsync(store, new Tallies());
        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        var deadLetter = HandMadeDeadLetter(
            Added(host, "gone", 1).WithHeader(Messages.HeaderNames.DeadLetterOrigin, nameof(DeadLetterOrigin.Projection)), "conformance-retired-projection");
        await deadLetters.AddAsync(deadLetter);

        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        Assert.Equal(DeadLetterRetryOutcome.Refused, await manager.RetryAsync(deadLetter.Id));

        Assert.Contains("'conformance-retired-projection', which is not registered on this host", (await manager.GetAsync(deadLetter.Id))!.LastRetryError, StringComparison.Ordinal);
        Assert.Null(await host.Services.GetRequiredService<ReadModels>().GetAsync(Tallies.Table, "gone"));
        await host.StopAsync();
    }

    // A dead letter of envelope at endpoint, as a failed handler leaves it.
    private static DeadLetter HandMadeDeadLetter(Messages.Envelope envelope, string endpoint) => new()
    {
        Id = Guid.CreateVersion7(),
        Envelope = envelope,
        Endpoint = endpoint,
        Cause = DeadLetterCause.RetriesExhausted,
        ErrorType = typeof(InvalidOperationException).FullName!,
        ErrorMessage = "the handler failed",
        Fingerprint = "f",
        FirstFailureTime = DateTimeOffset.UtcNow,
        LastFailureTime = DateTimeOffset.UtcNow,
        AttemptCount = 3,
    };

    /// <summary>Holds each of <paramref name="count"/> arrivals until all of them arrived (within the test's deadline).</summary>
    private sealed class Meeting(int count)
    {
        private readonly TaskCompletionSource _all = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _arrived;

        public Task ArriveAsync()
        {
            if (Interlocked.Increment(ref _arrived) == count)
            {
                _all.TrySetResult();
            }

            return _all.Task.WaitAsync(Eventually.DefaultTimeout);
        }
    }

    /// <summary>A handler's bug on one amount, which the test fixes: until then the event of that amount throws.</summary>
    private sealed class Breakable(int amount)
    {
        private volatile bool _fixed;
        private int _attempts;

        /// <summary>How often the handler met the event of that amount.</summary>
        public int Attempts => Volatile.Read(ref _attempts);

        public bool IsFixed => _fixed;

        public void Fix() => _fixed = true;

        public Task ThrowWhileBroken(TallyAdded e, ProjectionContext context)
        {
            if (e.Amount == amount)
            {
                Interlocked.Increment(ref _attempts);
                if (!_fixed)
                {
                    throw new InvalidOperationException($"the handler cannot take amount {amount} yet");
                }
            }

            return Task.CompletedTask;
        }
    }
}
