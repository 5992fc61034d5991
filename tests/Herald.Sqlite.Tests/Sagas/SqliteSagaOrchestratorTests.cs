using Herald.Conformance;
using Herald.Hosting;
using Herald.Persistence;
using Herald.Reliability.Retry;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Sqlite.Tests.Sagas;

/// <summary>
/// The orchestrator and its resume sweep on SQLite: parked instances run forward, and racing sweeps (or a sweep racing a
/// resume or a queued run) run a step once.
/// </summary>
public sealed class SqliteSagaOrchestratorTests : IDisposable
{
    private static readonly RetryPolicy NoRetries = RetryPolicy.Create(r => r.NoRetries());
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    public sealed class Order
    {
        public List<string> Done { get; set; } = [];
    }

    private static SagaDefinition<Order> Fulfilment(bool chargeFails) =>
        SagaDefinition.Create<Order>("sqlite-fulfilment", s => s
            .Step("reserve", Act("reserve"), c => c.Data.Done.Contains("reserve") ? throw new InvalidOperationException("release refused") : ValueTask.CompletedTask, NoRetries)
            .Step("charge", chargeFails ? _ => throw new InvalidOperationException("payment service down") : Act("charge"), retry: NoRetries)
            .Step("ship", Act("ship"), retry: NoRetries));

    private static Func<SagaStepContext<Order>, ValueTask> Act(string name) => c =>
    {
        c.Data.Done.Add(name);
        return ValueTask.CompletedTask;
    };

    private async Task<IHost> StartAsync(Action<HeraldBuilder> configure, TimeProvider? time = null, GatedSagaStore? gated = null)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h =>
        {
            h.Configure(o => o.StartConsumer = false);
            h.UseSqlite(_database.Path);
            configure(h);
        });
        if (time is not null)
        {
            builder.Services.AddSingleton<TimeProvider>(time);
        }

        if (gated is not null)
        {
            // The host's own store, with its direct saves (the owner's renewals) held or failed on demand.
            var inner = builder.Services.Last(d => d.ServiceType == typeof(ISagaStore));
            builder.Services.Add(ServiceDescriptor.Singleton<ISagaStore>(sp => gated.Wrap(
                inner.ImplementationInstance as ISagaStore ?? (ISagaStore?)inner.ImplementationFactory?.Invoke(sp) ?? (ISagaStore)ActivatorUtilities.CreateInstance(sp, inner.ImplementationType!))));
        }

        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [Fact]
    public async Task AParkedInstance_RetriedOnceItsCauseIsFixed_RunsForwardToCompletion()
    {
        using var host = await StartAsync(h => h.AddSaga(Fulfilment(chargeFails: false)));
        var orchestrator = host.Services.GetRequiredService<SagaOrchestrator>();
        var parked = await orchestrator.StartAsync(Fulfilment(chargeFails: true), "order-1", new Order());
        Assert.Equal(SagaStatus.Failed, parked.Status);
        Assert.Equal(["reserve"], parked.CompletedSteps);

        var ended = await orchestrator.RetryParkedAsync(Fulfilment(chargeFails: false), "order-1");
        var stored = await host.Services.GetRequiredService<ISagaStore>().LoadAsync("sqlite-fulfilment", "order-1");
        await host.StopAsync();

        Assert.Equal(SagaStatus.Completed, ended!.Status);
        Assert.Equal(SagaStatus.Completed, stored!.Status);
        Assert.Null(stored.Error);
        Assert.Equal(["reserve", "charge", "ship"], stored.CompletedSteps);
        Assert.Equal(["reserve", "charge", "ship"], SagaData.Read<Order>(stored).Done);
    }

    [Fact]
    public async Task TwoSweepsRacingForOneStaleInstance_RunItsStepOnce()
    {
        // Each sweep listed the instance as stale and resumed it: both ran its step (a call to a payment service, say)
        // before the version check at the commit left the instance to one of them.
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 7, 8, 0, 0, TimeSpan.Zero));
        var runs = 0;
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var definition = SagaDefinition.Create<Order>("sqlite-race", s => s
            .Step("charge", async c =>
            {
                Interlocked.Increment(ref runs);
                await release.Task.WaitAsync(c.CancellationToken);
                c.Data.Done.Add("charge");
            }, retry: NoRetries)
            .Step("ship", Act("ship"), retry: NoRetries));
        var configure = StaleAfterAMinute(definition);
        using var first = await StartAsync(configure, time);
        using var second = await StartAsync(configure, time);
        var store = first.Services.GetRequiredService<ISagaStore>();
        await store.SaveAsync(new SagaInstance { SagaType = "sqlite-race", Id = "order-2", Status = SagaStatus.Running, State = "charge", Data = "{}"u8.ToArray() });
        time.Advance(TimeSpan.FromMinutes(2));

        var sweeps = new[] { Sweep(first).SweepAsync(CancellationToken.None), Sweep(second).SweepAsync(CancellationToken.None) };
        // The sweep whose claim lost can be done before the one whose claim won has started the step: wait for that start too.
        await Eventually.UntilAsync(
            () => Volatile.Read(ref runs) == 2 || (Volatile.Read(ref runs) == 1 && sweeps.Any(s => s.IsCompleted)),
            "both sweeps run the step, or one runs it and the other is done");
        var runsWhileBlocked = Volatile.Read(ref runs);
        release.SetResult();
        await Task.WhenAll(sweeps);
        var ended = await store.LoadAsync("sqlite-race", "order-2");
        await first.StopAsync();
        await second.StopAsync();

        Assert.Equal(1, runsWhileBlocked);
        Assert.Equal(1, runs);
        Assert.Equal(SagaStatus.Completed, ended!.Status);
        Assert.Equal(["charge", "ship"], SagaData.Read<Order>(ended).Done);
    }

    [Fact]
    public async Task APublicResumeOfAStaleInstance_ClaimsItFirst_SoASweepElsewhereDoesNotRunItsStepToo()
    {
        // ResumeAsync loaded the stale instance and ran its step without a save: the instance stayed stale until the
        // step's first renewal, a third of StaleAfter in, and another node's sweep claimed it and ran the step meanwhile.
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 7, 8, 0, 0, TimeSpan.Zero));
        var runs = 0;
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var definition = SlowCharge("sqlite-resumed", () => Interlocked.Increment(ref runs), release.Task);
        var configure = StaleAfterAMinute(definition);
        using var owner = await StartAsync(configure, time);
        using var other = await StartAsync(configure, time);
        var store = other.Services.GetRequiredService<ISagaStore>();
        await store.SaveAsync(new SagaInstance { SagaType = "sqlite-resumed", Id = "order-7", Status = SagaStatus.Running, State = "charge", Data = "{}"u8.ToArray() });
        time.Advance(TimeSpan.FromMinutes(2));

        var resume = owner.Services.GetRequiredService<SagaOrchestrator>().ResumeAsync(definition, "order-7");
        await Eventually.UntilAsync(() => Volatile.Read(ref runs) == 1, "the resume runs the step");
        var sweep = Sweep(other).SweepAsync(CancellationToken.None);
        await Eventually.UntilAsync(() => Volatile.Read(ref runs) == 2 || sweep.IsCompleted, "the sweep runs the step again, or is done");
        var runsWhileBlocked = Volatile.Read(ref runs);
        release.SetResult();
        var ended = await resume;
        var resumed = await sweep;
        var stored = await store.LoadAsync("sqlite-resumed", "order-7");
        await owner.StopAsync();
        await other.StopAsync();

        Assert.Equal(1, runsWhileBlocked);
        Assert.Equal(0, resumed);
        Assert.Equal(SagaStatus.Completed, ended!.Status);
        Assert.Equal(["charge", "ship"], SagaData.Read<Order>(stored!).Done);
    }

    [Fact]
    public async Task APublicResumeOfAnInstanceAnotherNodeRuns_LeavesItToItsRunner_AndReturnsItAsStored()
    {
        // ResumeAsync claimed whatever it loaded at the version it loaded: an instance another node was running (saved a
        // moment ago, its step under way) was taken over, the step ran on both nodes, and the owner's step was cancelled at
        // its next renewal. The sweep leaves such an instance until it went StaleAfter without a save; so must a resume.
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 7, 8, 0, 0, TimeSpan.Zero));
        var runs = 0;
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var ownerStarted = new TaskCompletionSource<CancellationToken>(TaskCreationOptions.RunContinuationsAsynchronously);
        var definition = SlowCharge("sqlite-live", () => Interlocked.Increment(ref runs), release.Task, ownerStarted);
        var configure = StaleAfterAMinute(definition);
        using var owner = await StartAsync(configure, time);
        using var other = await StartAsync(configure, time);
        var store = other.Services.GetRequiredService<ISagaStore>();
        var run = owner.Services.GetRequiredService<SagaOrchestrator>().StartAsync(definition, "order-9", new Order());
        var ownerToken = await ownerStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));

        var resume = other.Services.GetRequiredService<SagaOrchestrator>().ResumeAsync(definition, "order-9");
        await Eventually.UntilAsync(() => resume.IsCompleted || Volatile.Read(ref runs) == 2, "the resume returns, or runs the step too");
        var runsAfterTheResume = Volatile.Read(ref runs);
        var ownerCancelled = ownerToken.IsCancellationRequested;
        release.SetResult();
        var resumed = await resume.WaitAsync(TimeSpan.FromSeconds(30));
        var ended = await run.WaitAsync(TimeSpan.FromSeconds(30));
        var stored = await store.LoadAsync("sqlite-live", "order-9");
        await owner.StopAsync();
        await other.StopAsync();

        Assert.Equal(1, runsAfterTheResume);
        Assert.False(ownerCancelled);
        Assert.Equal(SagaStatus.Running, resumed!.Status);
        Assert.Equal("charge", resumed.State);
        Assert.Equal(SagaStatus.Completed, ended.Status);
        Assert.Equal(["charge", "ship"], SagaData.Read<Order>(stored!).Done);
    }

    [Fact]
    public async Task AQueuedRunOfAStartInAUnitOfWork_WhoseInstanceASweepTookMeanwhile_DoesNotRunItsStepToo()
    {
        // The run queued by StartInAsync waited (a full runner, a node that cannot reach the store) until its instance went
        // stale; another node's sweep claimed it and ran its step, then the queued run loaded it and ran the step again.
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 7, 8, 0, 0, TimeSpan.Zero));
        var runs = 0;
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var definition = SlowCharge("sqlite-queued", () => Interlocked.Increment(ref runs), release.Task);
        var configure = StaleAfterAMinute(definition);
        var gated = new GatedSagaStore();
        using var owner = await StartAsync(configure, time, gated);
        using var other = await StartAsync(configure, time);
        var store = other.Services.GetRequiredService<ISagaStore>();
        var orchestrator = owner.Services.GetRequiredService<SagaOrchestrator>();
        TaskCompletionSource? held = null;
        await owner.Services.GetRequiredService<UnitOfWorkRunner>().RunAsync(async (services, token) =>
        {
            Assert.True(await orchestrator.StartInAsync(definition, "order-8", new Order(), services.GetRequiredService<IUnitOfWork>(), token));
            // From before the commit: the queued run's first call to the store waits.
            held = gated.Hold(loads: true);
        });
        await gated.Reached.WaitAsync(TimeSpan.FromSeconds(30));
        time.Advance(TimeSpan.FromMinutes(2));

        var sweep = Sweep(other).SweepAsync(CancellationToken.None);
        await Eventually.UntilAsync(() => Volatile.Read(ref runs) == 1, "the sweep runs the step of the stale instance");
        held!.SetResult();
        await Eventually.UntilAsync(
            () => Volatile.Read(ref runs) == 2 || !orchestrator.IsRunningHere("sqlite-queued", "order-8"),
            "the queued run runs the step again, or is done");
        var runsWhileBlocked = Volatile.Read(ref runs);
        release.SetResult();
        var resumed = await sweep;
        var stored = await store.LoadAsync("sqlite-queued", "order-8");
        await owner.StopAsync();
        await other.StopAsync();

        Assert.Equal(1, runsWhileBlocked);
        Assert.Equal(1, resumed);
        Assert.Equal(SagaStatus.Completed, stored!.Status);
        Assert.Equal(["charge", "ship"], SagaData.Read<Order>(stored).Done);
    }

    [Fact]
    public async Task AnOwnerWhoseStepOutlastsStaleAfter_KeepsItsInstance_AndASweepElsewhereDoesNotRunTheStep()
    {
        // The owner's step (a call to a slow payment service) ran longer than StaleAfter without a save: the sweep on the
        // other node took the live instance for stale, claimed it and ran the step a second time beside the owner.
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 7, 8, 0, 0, TimeSpan.Zero));
        var runs = 0;
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var definition = SlowCharge("sqlite-slow", () =>
        {
            Interlocked.Increment(ref runs);
            started.TrySetResult();
        }, release.Task);
        var configure = StaleAfterAMinute(definition);
        using var owner = await StartAsync(configure, time);
        using var other = await StartAsync(configure, time);
        var store = other.Services.GetRequiredService<ISagaStore>();
        var run = owner.Services.GetRequiredService<SagaOrchestrator>().StartAsync(definition, "order-3", new Order());
        await started.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // The renewal's timer is scheduled before the step runs. Each step of the clock waits for the instance to be
        // fresh (renewed within half of StaleAfter), so the sweep below sees what the owner saved.
        var allFresh = true;
        for (var i = 0; i < 8; i++)
        {
            time.Advance(TimeSpan.FromSeconds(10));
            allFresh &= await FreshAsync(store, "sqlite-slow", "order-3", time, TimeSpan.FromSeconds(30));
        }

        var sweep = Sweep(other).SweepAsync(CancellationToken.None);
        await Eventually.UntilAsync(() => Volatile.Read(ref runs) == 2 || sweep.IsCompleted, "the sweep runs the step again, or is done");
        var runsWhileBlocked = Volatile.Read(ref runs);
        release.SetResult();
        var ended = await run;
        var resumed = await sweep;
        var stored = await store.LoadAsync("sqlite-slow", "order-3");
        await owner.StopAsync();
        await other.StopAsync();

        Assert.Equal(1, runsWhileBlocked);
        Assert.Equal(0, resumed);
        Assert.True(allFresh);
        Assert.Equal(SagaStatus.Completed, ended.Status);
        Assert.Equal(SagaStatus.Completed, stored!.Status);
        Assert.Equal(["charge", "ship"], SagaData.Read<Order>(stored).Done);
    }

    [Fact]
    public async Task AnOwnerWhoseRenewalsWereHeldUntilASweepTookItsInstance_HasItsStepCancelled_AndCommitsNothing()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 7, 8, 0, 0, TimeSpan.Zero));
        var runs = 0;
        var ownerStarted = new TaskCompletionSource<CancellationToken>(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var definition = SlowCharge("sqlite-taken", () => Interlocked.Increment(ref runs), release.Task, ownerStarted);
        var configure = StaleAfterAMinute(definition);
        var gated = new GatedSagaStore();
        using var owner = await StartAsync(configure, time, gated);
        using var other = await StartAsync(configure, time);
        var store = other.Services.GetRequiredService<ISagaStore>();
        var run = owner.Services.GetRequiredService<SagaOrchestrator>().StartAsync(definition, "order-4", new Order());
        var ownerToken = await ownerStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // The owner cannot reach the store for a while: its renewal hangs, and the instance goes stale.
        var held = gated.Hold();
        for (var i = 0; i < 8; i++)
        {
            time.Advance(TimeSpan.FromSeconds(10));
        }

        var sweep = Sweep(other).SweepAsync(CancellationToken.None);
        await Eventually.UntilAsync(() => Volatile.Read(ref runs) == 2, "the sweep runs the step of the stale instance");
        Assert.False(ownerToken.IsCancellationRequested);
        held.SetResult();
        await Eventually.UntilAsync(() => ownerToken.IsCancellationRequested, "the owner's step is cancelled once its renewal finds the instance taken");
        var ownerEnded = await run;
        release.SetResult();
        var resumed = await sweep;
        var stored = await store.LoadAsync("sqlite-taken", "order-4");
        await owner.StopAsync();
        await other.StopAsync();

        Assert.Equal(1, resumed);
        Assert.Equal(2, runs);
        Assert.Equal(SagaStatus.Completed, stored!.Status);
        Assert.Equal(["charge", "ship"], SagaData.Read<Order>(stored).Done);
        Assert.NotEqual(SagaStatus.Failed, ownerEnded.Status);
    }

    [Fact]
    public async Task AnOwnerWhoseRenewalsFailUntilStaleAfterRanOut_HasItsStepCancelled_AndASweepTakesTheInstanceOver()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 7, 8, 0, 0, TimeSpan.Zero));
        var runs = 0;
        var ownerStarted = new TaskCompletionSource<CancellationToken>(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var definition = SlowCharge("sqlite-ran-out", () => Interlocked.Increment(ref runs), release.Task, ownerStarted);
        var configure = StaleAfterAMinute(definition);
        var gated = new GatedSagaStore();
        using var owner = await StartAsync(configure, time, gated);
        using var other = await StartAsync(configure, time);
        var store = other.Services.GetRequiredService<ISagaStore>();
        var run = owner.Services.GetRequiredService<SagaOrchestrator>().StartAsync(definition, "order-5", new Order());
        var ownerToken = await ownerStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // Each renewal fails at once (the store cannot be reached), and is tried again on the clock's timer.
        gated.Fail();
        for (var i = 0; i < 5; i++)
        {
            time.Advance(TimeSpan.FromSeconds(10));
        }

        Assert.False(ownerToken.IsCancellationRequested);
        for (var i = 0; i < 3; i++)
        {
            time.Advance(TimeSpan.FromSeconds(5));
        }

        await Eventually.UntilAsync(() => ownerToken.IsCancellationRequested, "the owner's step is cancelled once its instance went StaleAfter without a save");
        var ownerEnded = await run;
        var sweep = Sweep(other).SweepAsync(CancellationToken.None);
        await Eventually.UntilAsync(() => Volatile.Read(ref runs) == 2, "the sweep runs the step of the stale instance");
        release.SetResult();
        var resumed = await sweep;
        var stored = await store.LoadAsync("sqlite-ran-out", "order-5");
        await owner.StopAsync();
        await other.StopAsync();

        Assert.Equal(SagaStatus.Running, ownerEnded.Status);
        Assert.Equal(1, resumed);
        Assert.Equal(SagaStatus.Completed, stored!.Status);
        Assert.Equal(["charge", "ship"], SagaData.Read<Order>(stored).Done);
    }

    [Fact]
    public async Task AStepRetriedAfterItsCommitFailed_WhoseRenewalsThenFail_IsCancelledOnceItsInstanceWentStaleAfterWithoutASave()
    {
        // The first attempt's commit fails (not a conflict), so its renewals stopped for that commit start over for the
        // retry. The instance was last saved when the saga started: counting StaleAfter from the restart would keep the
        // retry running for a third of StaleAfter after another node's sweep may take the instance and run the step too.
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 7, 8, 0, 0, TimeSpan.Zero));
        var started = time.GetUtcNow();
        var runs = 0;
        var firstRunning = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var releaseFirst = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var retryRunning = new TaskCompletionSource<CancellationToken>(TaskCreationOptions.RunContinuationsAsynchronously);
        var releaseRetry = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var definition = SagaDefinition.Create<Order>("sqlite-retried-commit", s => s
            .Step("charge", async c =>
            {
                if (Interlocked.Increment(ref runs) == 1)
                {
                    firstRunning.TrySetResult();
                    await releaseFirst.Task;
                }
                else
                {
                    retryRunning.TrySetResult(c.CancellationToken);
                    await releaseRetry.Task.WaitAsync(c.CancellationToken);
                }

                c.Data.Done.Add("charge");
            }, retry: RetryPolicy.Create(r => r.Immediate(1)))
            .Step("ship", Act("ship"), retry: NoRetries));
        var gated = new GatedSagaStore();
        using var owner = await StartAsync(StaleAfterAMinute(definition), time, gated);
        var store = owner.Services.GetRequiredService<ISagaStore>();
        var run = owner.Services.GetRequiredService<SagaOrchestrator>().StartAsync(definition, "order-6", new Order());
        try
        {
            await firstRunning.Task.WaitAsync(TimeSpan.FromSeconds(30));

            // Just before the first renewal is due, the step ends and its commit fails; the retry starts at once.
            time.Advance(TimeSpan.FromSeconds(19));
            gated.FailNextUnitOfWorkSave();
            releaseFirst.SetResult();
            var retryToken = await retryRunning.Task.WaitAsync(TimeSpan.FromSeconds(30));

            // From now on the node cannot reach the store: every renewal fails, and is tried again on the clock's timer.
            gated.Fail();
            for (var i = 0; i < 9; i++)
            {
                time.Advance(TimeSpan.FromSeconds(5));
            }

            // A minute and more since its last save: any sweep may take it over now.
            Assert.True((await store.LoadAsync("sqlite-retried-commit", "order-6"))!.UpdatedAt <= time.GetUtcNow() - TimeSpan.FromMinutes(1));
            Assert.True(time.GetUtcNow() - started < TimeSpan.FromMinutes(1) + TimeSpan.FromSeconds(19));
            await Eventually.UntilAsync(() => retryToken.IsCancellationRequested, "the retry is cancelled once its instance went StaleAfter without a save", TimeSpan.FromSeconds(5));
            var ended = await run.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(SagaStatus.Running, ended.Status);
        }
        finally
        {
            releaseFirst.TrySetResult();
            releaseRetry.TrySetResult();
        }

        await owner.StopAsync();
    }

    // Hosts of the saga whose instances go stale after a minute, swept only when a test says.
    private static Action<HeraldBuilder> StaleAfterAMinute(SagaDefinition<Order> definition) => h => h.AddSaga(definition).ConfigureSagas(o =>
    {
        o.StaleAfter = TimeSpan.FromMinutes(1);
        o.ResumeInterval = TimeSpan.FromHours(1);
    });

    // A saga whose first step runs `ran`, hands its token to `first` (the first run only), and waits for `release`.
    private static SagaDefinition<Order> SlowCharge(string name, Action ran, Task release, TaskCompletionSource<CancellationToken>? first = null) =>
        SagaDefinition.Create<Order>(name, s => s
            .Step("charge", async c =>
            {
                ran();
                first?.TrySetResult(c.CancellationToken);
                await release.WaitAsync(c.CancellationToken);
                c.Data.Done.Add("charge");
            }, retry: NoRetries)
            .Step("ship", Act("ship"), retry: NoRetries));

    // Waits until the instance was saved within `within` of the clock's now; false when it is not by the deadline (so the
    // unfixed code fails on the sweep's second run, not here).
    private static async Task<bool> FreshAsync(ISagaStore store, string saga, string id, FakeTimeProvider time, TimeSpan within)
    {
        try
        {
            await Eventually.UntilAsync(
                async () => (await store.LoadAsync(saga, id))!.UpdatedAt >= time.GetUtcNow() - within,
                "the instance is fresh",
                TimeSpan.FromSeconds(10));
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    // A host's saga store whose direct saves (and loads, when asked) wait while held, or fail (the node cannot reach the store).
    public sealed class GatedSagaStore
    {
        private volatile Task _gate = Task.CompletedTask;
        private volatile bool _holdsLoads;
        private volatile TaskCompletionSource _reached = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private volatile bool _failing;

        private volatile bool _failNextUnitOfWorkSave;

        public void Fail() => _failing = true;

        // The next save enlisted in a unit of work throws (a commit that failed, not by a conflict).
        public void FailNextUnitOfWorkSave() => _failNextUnitOfWorkSave = true;

        // Completes once a call waits at the gate of the latest hold.
        public Task Reached => _reached.Task;

        public TaskCompletionSource Hold(bool loads = false)
        {
            var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _holdsLoads = loads;
            _gate = held.Task;
            return held;
        }

        private async ValueTask PassAsync(CancellationToken cancellationToken)
        {
            var gate = _gate;
            if (!gate.IsCompleted)
            {
                _reached.TrySetResult();
                await gate.WaitAsync(cancellationToken);
            }
        }

        public ISagaStore Wrap(ISagaStore inner) => new Gated(inner, this);

        private sealed class Gated(ISagaStore inner, GatedSagaStore gated) : ISagaStore
        {
            public async ValueTask<SagaInstance?> LoadAsync(string sagaType, string id, CancellationToken cancellationToken = default)
            {
                if (gated._holdsLoads)
                {
                    await gated.PassAsync(cancellationToken);
                }

                return await inner.LoadAsync(sagaType, id, cancellationToken);
            }

            public async ValueTask<long> SaveAsync(SagaInstance instance, CancellationToken cancellationToken = default)
            {
                if (gated._failing)
                {
                    throw new IOException("The store cannot be reached.");
                }

                await gated.PassAsync(cancellationToken);
                return await inner.SaveAsync(instance, cancellationToken);
            }

            public ValueTask SaveAsync(SagaInstance instance, Herald.Persistence.IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
            {
                if (gated._failNextUnitOfWorkSave)
                {
                    gated._failNextUnitOfWorkSave = false;
                    throw new IOException("The commit failed.");
                }

                return inner.SaveAsync(instance, unitOfWork, cancellationToken);
            }

            public ValueTask<IReadOnlyList<SagaInstance>> ListAsync(SagaQuery query, CancellationToken cancellationToken = default) => inner.ListAsync(query, cancellationToken);

            public ValueTask<bool> DeleteAsync(string sagaType, string id, long version, CancellationToken cancellationToken = default) => inner.DeleteAsync(sagaType, id, version, cancellationToken);
        }
    }

    private static SagaResumeService Sweep(IHost host) =>
        host.Services.GetServices<IHostedService>().OfType<SagaResumeService>().Single();
}
