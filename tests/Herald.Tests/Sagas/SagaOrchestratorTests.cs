using System.Collections.Concurrent;
using System.Text;
using Herald.Conformance;
using Herald.Hosting;
using Herald.Persistence;
using Herald.Reliability.Retry;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Tests.Sagas;

public sealed class SagaOrchestratorTests
{
    private static readonly RetryPolicy NoRetries = RetryPolicy.Create(r => r.NoRetries());
    private static readonly RetryPolicy TwoImmediate = RetryPolicy.Create(r => r.Immediate(2).Delayed(0, TimeSpan.Zero, TimeSpan.Zero));

    public sealed class Order
    {
        public string OrderId { get; set; } = "";

        public List<string> Done { get; set; } = [];
    }

    // What the steps did, in order, and which effects committed (written through the step's unit of work).
    private sealed class Journal
    {
        public ConcurrentQueue<string> Calls { get; } = new();

        public ConcurrentQueue<string> Committed { get; } = new();

        public Func<SagaStepContext<Order>, ValueTask> Act(string name, Func<SagaStepContext<Order>, bool>? fails = null) => context =>
        {
            Calls.Enqueue(name);
            context.Services.GetRequiredService<IUnitOfWork>().OnCommitted(_ =>
            {
                Committed.Enqueue(name);
                return ValueTask.CompletedTask;
            });
            if (fails?.Invoke(context) == true)
            {
                throw new InvalidOperationException($"{name} refused");
            }

            context.Data.Done.Add(name);
            return ValueTask.CompletedTask;
        };
    }

    private static SagaDefinition<Order> Fulfilment(Journal journal, string? failing = null, bool compensationFails = false, RetryPolicy? retry = null) =>
        SagaDefinition.Create<Order>("fulfilment", s => s
            .Step("reserve-inventory", journal.Act("reserve"), journal.Act("release", _ => compensationFails), retry ?? NoRetries)
            .Step("charge-payment", journal.Act("charge", _ => failing == "charge-payment"), journal.Act("refund"), retry ?? NoRetries)
            .Step("create-shipment", journal.Act("ship", _ => failing == "create-shipment"), retry: retry ?? NoRetries)
            .Step("confirm-order", journal.Act("confirm", _ => failing == "confirm-order"), retry: retry ?? NoRetries));

    private static ServiceProvider Build(Action<HeraldBuilder>? configure = null)
    {
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddHerald(h => configure?.Invoke(h));
        return services.BuildServiceProvider(new ServiceProviderOptions { ValidateScopes = true });
    }

    [Fact]
    public async Task EveryStepSucceeding_CompletesTheSaga_WithEachStepsDataAndEffectSavedOnce()
    {
        var journal = new Journal();
        await using var services = Build();
        var orchestrator = services.GetRequiredService<SagaOrchestrator>();

        var ended = await orchestrator.StartAsync(Fulfilment(journal), "order-1", new Order { OrderId = "order-1" });

        Assert.Equal(SagaStatus.Completed, ended.Status);
        Assert.Equal(["reserve-inventory", "charge-payment", "create-shipment", "confirm-order"], ended.CompletedSteps);
        Assert.Equal(["reserve", "charge", "ship", "confirm"], journal.Committed);
        var stored = await services.GetRequiredService<ISagaStore>().LoadAsync("fulfilment", "order-1");
        Assert.Equal(SagaStatus.Completed, stored!.Status);
        Assert.Equal(5, stored.Version);
        Assert.Contains("\"done\":[\"reserve\",\"charge\",\"ship\",\"confirm\"]", Encoding.UTF8.GetString(stored.Data.Span), StringComparison.Ordinal);
    }

    [Fact]
    public async Task AFailingStep_CompensatesTheCompletedStepsInReverseOrder_AndRollsBackItsOwnEffect()
    {
        var journal = new Journal();
        await using var services = Build();

        var ended = await services.GetRequiredService<SagaOrchestrator>().StartAsync(Fulfilment(journal, failing: "create-shipment"), "order-2", new Order());

        Assert.Equal(SagaStatus.Compensated, ended.Status);
        Assert.Empty(ended.CompletedSteps);
        Assert.Contains("Step 'create-shipment' failed: InvalidOperationException: ship refused", ended.Error, StringComparison.Ordinal);
        Assert.Equal(["reserve", "charge", "ship", "refund", "release"], journal.Calls);
        Assert.Equal(["reserve", "charge", "refund", "release"], journal.Committed);
    }

    [Fact]
    public async Task AFailingStep_AfterAStepWithNothingToUndo_StillCompensatesTheStepsBeforeIt()
    {
        var journal = new Journal();
        await using var services = Build();

        // create-shipment has no compensation (as docs/sagas.md shows); confirm-order fails after it.
        var ended = await services.GetRequiredService<SagaOrchestrator>().StartAsync(Fulfilment(journal, failing: "confirm-order"), "order-2b", new Order());

        Assert.True(ended.Status == SagaStatus.Compensated, $"status {ended.Status}: {ended.Error}");
        Assert.Empty(ended.CompletedSteps);
        Assert.Equal(["reserve", "charge", "ship", "confirm", "refund", "release"], journal.Calls);
        Assert.Equal(["reserve", "charge", "ship", "refund", "release"], journal.Committed);
        var stored = await services.GetRequiredService<ISagaStore>().LoadAsync("fulfilment", "order-2b");
        Assert.Equal(SagaStatus.Compensated, stored!.Status);
    }

    [Fact]
    public async Task Resume_OfAnInstanceLeftCompensating_AtAStepWithNothingToUndo_CompensatesTheStepsBeforeIt()
    {
        var journal = new Journal();
        await using var services = Build();
        await services.GetRequiredService<ISagaStore>().SaveAsync(new SagaInstance
        {
            SagaType = "fulfilment",
            Id = "order-5b",
            Status = SagaStatus.Compensating,
            CurrentStep = 3,
            CompletedSteps = ["reserve-inventory", "charge-payment", "create-shipment"],
            Error = "Step 'confirm-order' failed: refused",
            Data = """{"orderId":"order-5b","done":["reserve","charge","ship"]}"""u8.ToArray(),
        });

        var ended = await services.GetRequiredService<SagaOrchestrator>().ResumeAsync(Fulfilment(journal), "order-5b");

        Assert.True(ended!.Status == SagaStatus.Compensated, $"status {ended.Status}: {ended.Error}");
        Assert.Equal(["refund", "release"], journal.Committed);
    }

    [Fact]
    public async Task AResumeWhileThisProcessRunsTheInstance_RunsNoStepASecondTime()
    {
        var journal = new Journal();
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var definition = SagaDefinition.Create<Order>("gated", s => s
            .Step("a", async context =>
            {
                journal.Calls.Enqueue("a");
                entered.TrySetResult();
                await gate.Task;
            }, retry: NoRetries)
            .Step("b", journal.Act("b"), retry: NoRetries));
        await using var services = Build();
        var orchestrator = services.GetRequiredService<SagaOrchestrator>();

        // As the start-up resume would find it: saved as running, its first step in flight.
        var started = orchestrator.StartAsync(definition, "g-1", new Order());
        await entered.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var resumed = await orchestrator.ResumeAsync(definition, "g-1");
        gate.SetResult();
        var ended = await started;

        Assert.Equal(SagaStatus.Running, resumed!.Status);
        Assert.Equal(SagaStatus.Completed, ended.Status);
        Assert.Equal(["a", "b"], journal.Calls);
        await Assert.ThrowsAsync<SagaConcurrencyException>(() => orchestrator.StartAsync(definition, "g-1", new Order()));
    }

    [Fact]
    public async Task AFailingFirstStep_HasNothingToCompensate()
    {
        var journal = new Journal();
        var definition = SagaDefinition.Create<Order>("first-fails", s => s
            .Step("a", journal.Act("a", _ => true), journal.Act("undo-a"), NoRetries)
            .Step("b", journal.Act("b"), retry: NoRetries));
        await using var services = Build();

        var ended = await services.GetRequiredService<SagaOrchestrator>().StartAsync(definition, "x", new Order());

        Assert.Equal(SagaStatus.Compensated, ended.Status);
        Assert.Equal(["a"], journal.Calls);
        Assert.Empty(journal.Committed);
    }

    [Fact]
    public async Task ATransientFailure_IsRetriedByTheStepsPolicy_AndTheSagaCompletes()
    {
        var journal = new Journal();
        var attempts = 0;
        var definition = SagaDefinition.Create<Order>("flaky", s => s
            .Step("charge", journal.Act("charge", _ => Interlocked.Increment(ref attempts) < 3), retry: TwoImmediate));
        await using var services = Build();

        var ended = await services.GetRequiredService<SagaOrchestrator>().StartAsync(definition, "f-1", new Order());

        Assert.Equal(SagaStatus.Completed, ended.Status);
        Assert.Equal(3, attempts);
        Assert.Equal(["charge"], journal.Committed);
    }

    [Fact]
    public async Task ACompensationThatKeepsFailing_ParksTheSagaAsFailed_VisibleInTheStore()
    {
        var journal = new Journal();
        await using var services = Build();

        var ended = await services.GetRequiredService<SagaOrchestrator>().StartAsync(
            Fulfilment(journal, failing: "charge-payment", compensationFails: true, retry: TwoImmediate), "order-3", new Order());

        Assert.Equal(SagaStatus.Failed, ended.Status);
        Assert.Equal(["reserve-inventory"], ended.CompletedSteps);
        Assert.Contains("Step 'charge-payment' failed", ended.Error, StringComparison.Ordinal);
        Assert.Contains("Compensation of step 'reserve-inventory' failed: InvalidOperationException: release refused", ended.Error, StringComparison.Ordinal);
        Assert.Equal(3, journal.Calls.Count(c => c == "release"));
        var failed = await services.GetRequiredService<ISagaStore>().ListAsync(new SagaQuery { SagaType = "fulfilment", Statuses = [SagaStatus.Failed] });
        Assert.Equal(["order-3"], failed.Select(i => i.Id));
    }

    [Fact]
    public async Task AParkedInstance_ResumedOnceItsCauseIsFixed_RunsTheCompensationsStillDue()
    {
        // Parked, nothing ever undid the reserved stock: ResumeAsync and the sweep leave a finished instance alone.
        var journal = new Journal();
        await using var services = Build();
        var orchestrator = services.GetRequiredService<SagaOrchestrator>();
        await orchestrator.StartAsync(Fulfilment(journal, failing: "charge-payment", compensationFails: true), "order-p", new Order());
        Assert.Equal(SagaStatus.Failed, (await orchestrator.ResumeAsync(Fulfilment(journal, failing: "charge-payment"), "order-p"))!.Status);
        Assert.DoesNotContain("release", journal.Committed);

        // The release works again (the stock service is back, a fixed definition is deployed).
        var ended = await orchestrator.ResumeParkedAsync(Fulfilment(journal, failing: "charge-payment"), "order-p");

        Assert.Equal(SagaStatus.Compensated, ended!.Status);
        Assert.Empty(ended.CompletedSteps);
        Assert.Equal(["reserve", "release"], journal.Committed);
        Assert.Equal(SagaStatus.Compensated, (await services.GetRequiredService<ISagaStore>().LoadAsync("fulfilment", "order-p"))!.Status);
        Assert.Equal(SagaStatus.Compensated, (await orchestrator.ResumeParkedAsync(Fulfilment(journal), "order-p"))!.Status);
        Assert.Equal(["reserve", "release"], journal.Committed);
    }

    [Fact]
    public async Task AParkedInstance_RetriedOnceItsCauseIsFixed_RunsForwardFromTheStepItFailedAt_AndCompensatesNothing()
    {
        // ResumeParkedAsync only compensated: an instance parked because its payment service was down could only be
        // undone, never finished once the service was back.
        var journal = new Journal();
        await using var services = Build();
        var orchestrator = services.GetRequiredService<SagaOrchestrator>();
        var parked = await orchestrator.StartAsync(Fulfilment(journal, failing: "charge-payment", compensationFails: true), "order-f", new Order());
        Assert.Equal(SagaStatus.Failed, parked.Status);

        var ended = await orchestrator.RetryParkedAsync(Fulfilment(journal), "order-f");

        Assert.Equal(SagaStatus.Completed, ended!.Status);
        Assert.Null(ended.Error);
        Assert.Equal(["reserve-inventory", "charge-payment", "create-shipment", "confirm-order"], ended.CompletedSteps);
        Assert.Equal(["reserve", "charge", "ship", "confirm"], journal.Committed);
        Assert.Equal(SagaStatus.Completed, (await services.GetRequiredService<ISagaStore>().LoadAsync("fulfilment", "order-f"))!.Status);

        // Finished now: a second retry changes nothing.
        Assert.Equal(SagaStatus.Completed, (await orchestrator.RetryParkedAsync(Fulfilment(journal), "order-f"))!.Status);
        Assert.Equal(["reserve", "charge", "ship", "confirm"], journal.Committed);
    }

    [Fact]
    public async Task AnInstanceParkedAtAStep_RetriedOnceFixed_RunsThatStepAndTheRest_AndOneThatStillFails_Compensates()
    {
        // Parked at 'charge-payment' (its data did not read as the data type then): the retry runs that step on.
        var journal = new Journal();
        await using var services = Build();
        var store = services.GetRequiredService<ISagaStore>();
        await store.SaveAsync(new SagaInstance
        {
            SagaType = "fulfilment", Id = "order-s", Status = SagaStatus.Failed, State = "charge-payment", CurrentStep = 1,
            CompletedSteps = ["reserve-inventory"], Data = """{"orderId":"order-s","done":["reserve"]}"""u8.ToArray(), Error = "The data did not read.",
        });
        await store.SaveAsync(new SagaInstance
        {
            SagaType = "fulfilment", Id = "order-t", Status = SagaStatus.Failed, State = "charge-payment", CurrentStep = 1,
            CompletedSteps = ["reserve-inventory"], Data = """{"orderId":"order-t","done":["reserve"]}"""u8.ToArray(), Error = "The data did not read.",
        });
        var orchestrator = services.GetRequiredService<SagaOrchestrator>();

        var ended = await orchestrator.RetryParkedAsync(Fulfilment(journal), "order-s");
        var failing = await orchestrator.RetryParkedAsync(Fulfilment(journal, failing: "create-shipment"), "order-t");

        Assert.Equal(SagaStatus.Completed, ended!.Status);
        Assert.Equal(["reserve", "charge", "ship", "confirm"], SagaData.Read<Order>(ended).Done);
        Assert.Equal(SagaStatus.Compensated, failing!.Status);
        Assert.StartsWith("Step 'create-shipment' failed", failing.Error, StringComparison.Ordinal);
        Assert.Equal(["charge", "ship", "confirm", "charge", "refund", "release"], journal.Committed);
    }

    [Fact]
    public async Task AParkedInstanceResumedWhileItsCompensationStillFails_KeepsOneErrorOfEachKind_NotOneMorePerResume()
    {
        // Each park appended the compensation's failure to the error it stood with, which after a resume held the last
        // park's already: the error grew by one "Compensation ... failed" per park/resume cycle, without bound.
        var journal = new Journal();
        await using var services = Build();
        var orchestrator = services.GetRequiredService<SagaOrchestrator>();
        var definition = Fulfilment(journal, failing: "charge-payment", compensationFails: true);
        var parked = await orchestrator.StartAsync(definition, "order-r", new Order());
        Assert.Equal(SagaStatus.Failed, parked.Status);

        for (var cycle = 0; cycle < 3; cycle++)
        {
            var again = await orchestrator.ResumeParkedAsync(definition, "order-r");
            Assert.Equal(SagaStatus.Failed, again!.Status);
            Assert.Equal(parked.Error, again.Error);
        }

        var stored = (await services.GetRequiredService<ISagaStore>().LoadAsync("fulfilment", "order-r"))!.Error!;
        Assert.Equal(parked.Error, stored);
        Assert.StartsWith("Step 'charge-payment' failed: InvalidOperationException: charge refused", stored, StringComparison.Ordinal);
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(stored, "Compensation of step"));
    }

    [Fact]
    public async Task AStepWhoseWriteConflictsOnAnotherSagasInstance_IsRetriedByItsPolicy_NotTakenForATakeOver()
    {
        // The step starts a child instance that a racing writer created first: the conflict names the child, not this
        // instance. Taken for a takeover, the run stopped with the instance Running and its step's retries unspent.
        await using var services = Build();
        var store = services.GetRequiredService<ISagaStore>();
        await store.SaveAsync(new SagaInstance { SagaType = "shipping", Id = "child-1", Status = SagaStatus.Running });
        var runs = 0;
        var definition = SagaDefinition.Create<Order>("parent", s => s
            .Step("start-child", async context =>
            {
                var child = new SagaInstance { SagaType = "shipping", Id = ++runs == 1 ? "child-1" : "child-2", Status = SagaStatus.Running };
                await context.Services.GetRequiredService<ISagaStore>().SaveAsync(child, context.Services.GetRequiredService<IUnitOfWork>(), context.CancellationToken);
            }, retry: TwoImmediate)
            .Step("confirm", _ => ValueTask.CompletedTask, retry: NoRetries));

        var ended = await services.GetRequiredService<SagaOrchestrator>().StartAsync(definition, "p-1", new Order());

        Assert.Equal(SagaStatus.Completed, ended.Status);
        Assert.Equal(2, runs);
        Assert.NotNull(await store.LoadAsync("shipping", "child-2"));
    }

    [Fact]
    public async Task AStepRunningPastItsTimeout_IsCancelledAndCountsAsFailed()
    {
        var journal = new Journal();
        var definition = SagaDefinition.Create<Order>("slow", s => s
            .Step("reserve", journal.Act("reserve"), journal.Act("release"), NoRetries)
            .Step("wait-forever", async context => await Task.Delay(Timeout.InfiniteTimeSpan, context.CancellationToken), retry: NoRetries, timeout: TimeSpan.FromMilliseconds(50)));
        await using var services = Build();

        var ended = await services.GetRequiredService<SagaOrchestrator>().StartAsync(definition, "s-1", new Order());

        Assert.Equal(SagaStatus.Compensated, ended.Status);
        Assert.Contains("did not finish within", ended.Error, StringComparison.Ordinal);
        Assert.Equal(["reserve", "release"], journal.Committed);
    }

    [Fact]
    public async Task Resume_OfAnInstanceLeftMidway_RunsOnlyTheStepsNotYetDone()
    {
        var journal = new Journal();
        await using var services = Build();
        var store = services.GetRequiredService<ISagaStore>();
        await store.SaveAsync(new SagaInstance
        {
            SagaType = "fulfilment",
            Id = "order-4",
            Status = SagaStatus.Running,
            State = "create-shipment",
            CurrentStep = 2,
            CompletedSteps = ["reserve-inventory", "charge-payment"],
            Data = """{"orderId":"order-4","done":["reserve","charge"]}"""u8.ToArray(),
        });

        var ended = await services.GetRequiredService<SagaOrchestrator>().ResumeAsync(Fulfilment(journal), "order-4");

        Assert.Equal(SagaStatus.Completed, ended!.Status);
        Assert.Equal(["ship", "confirm"], journal.Committed);
        Assert.Contains("\"done\":[\"reserve\",\"charge\",\"ship\",\"confirm\"]", Encoding.UTF8.GetString(ended.Data.Span), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Resume_UnderADefinitionThatChangedBeforeItsStep_RunsTheStepItStoppedAt_OrParksItWhenThatStepIsGone()
    {
        // Stopped at create-shipment (index 2); the next deploy adds a step before it, and another removes it. By index
        // the resume would charge the payment again, or skip the shipment.
        var journal = new Journal();
        await using var services = Build();
        var store = services.GetRequiredService<ISagaStore>();
        foreach (var id in new[] { "order-12", "order-13" })
        {
            await store.SaveAsync(new SagaInstance
            {
                SagaType = "fulfilment",
                Id = id,
                Status = SagaStatus.Running,
                State = "create-shipment",
                CurrentStep = 2,
                CompletedSteps = ["reserve-inventory", "charge-payment"],
                Data = """{"orderId":"o","done":["reserve","charge"]}"""u8.ToArray(),
            });
        }

        var added = SagaDefinition.Create<Order>("fulfilment", s => s
            .Step("reserve-inventory", journal.Act("reserve"), journal.Act("release"), NoRetries)
            .Step("check-fraud", journal.Act("check"), retry: NoRetries)
            .Step("charge-payment", journal.Act("charge"), journal.Act("refund"), NoRetries)
            .Step("create-shipment", journal.Act("ship"), retry: NoRetries)
            .Step("confirm-order", journal.Act("confirm"), retry: NoRetries));
        var removed = SagaDefinition.Create<Order>("fulfilment", s => s
            .Step("reserve-inventory", journal.Act("reserve"), journal.Act("release"), NoRetries)
            .Step("charge-payment", journal.Act("charge"), journal.Act("refund"), NoRetries)
            .Step("confirm-order", journal.Act("confirm"), retry: NoRetries));
        var orchestrator = services.GetRequiredService<SagaOrchestrator>();

        var resumed = await orchestrator.ResumeAsync(added, "order-12");
        Assert.Equal(SagaStatus.Completed, resumed!.Status);
        Assert.Equal(["ship", "confirm"], journal.Committed);

        var parked = await orchestrator.ResumeAsync(removed, "order-13");
        Assert.Equal(SagaStatus.Failed, parked!.Status);
        Assert.Contains("'create-shipment' is not in the saga's definition", parked.Error, StringComparison.Ordinal);
        Assert.Equal(["ship", "confirm"], journal.Committed);
        Assert.Equal(["reserve-inventory", "charge-payment"], (await store.LoadAsync("fulfilment", "order-13"))!.CompletedSteps);
    }

    [Fact]
    public async Task AnInstanceWhoseDataNoLongerReads_IsParkedAtOnce_NamingTheInstance_WithItsStepsLeftDone()
    {
        // Saved by an earlier shape of Order (Done was a string then): every run reads it the same way. It counted as the
        // step's failure: retried, then "compensated", so an instance at its first step ended Compensated (finished, as if
        // undone, though nothing had failed), and one midway ran its compensations' retries before it was parked.
        var journal = new Journal();
        await using var services = Build();
        var store = services.GetRequiredService<ISagaStore>();
        await store.SaveAsync(new SagaInstance
        {
            SagaType = "fulfilment", Id = "order-20", Status = SagaStatus.Running, State = "reserve-inventory", Data = """{"orderId":"o","done":"none"}"""u8.ToArray(),
        });
        await store.SaveAsync(new SagaInstance
        {
            SagaType = "fulfilment",
            Id = "order-21",
            Status = SagaStatus.Running,
            State = "create-shipment",
            CurrentStep = 2,
            CompletedSteps = ["reserve-inventory", "charge-payment"],
            Data = """{"orderId":"o","done":"reserve,charge"}"""u8.ToArray(),
        });
        var orchestrator = services.GetRequiredService<SagaOrchestrator>();

        foreach (var (id, at, done) in new[] { ("order-20", "reserve-inventory", Array.Empty<string>()), ("order-21", "create-shipment", ["reserve-inventory", "charge-payment"]) })
        {
            var parked = await orchestrator.ResumeAsync(Fulfilment(journal, retry: TwoImmediate), id);

            Assert.Equal(SagaStatus.Failed, parked!.Status);
            Assert.StartsWith($"Saga 'fulfilment' instance '{id}' (state '{at}') holds data that cannot be read as Order", parked.Error, StringComparison.Ordinal);
            Assert.Equal(done, parked.CompletedSteps);
            Assert.Equal(at, parked.State);
            Assert.Equal(SagaStatus.Failed, (await store.LoadAsync("fulfilment", id))!.Status);
        }

        // One left compensating: its compensation cannot read the data either, and is parked at once with both reasons.
        await store.SaveAsync(new SagaInstance
        {
            SagaType = "fulfilment",
            Id = "order-22",
            Status = SagaStatus.Compensating,
            State = "charge-payment",
            CurrentStep = 2,
            CompletedSteps = ["reserve-inventory", "charge-payment"],
            Error = "Step 'create-shipment' failed: TimeoutException: no carrier",
            Data = """{"orderId":"o","done":"reserve,charge"}"""u8.ToArray(),
        });
        var compensating = await orchestrator.ResumeAsync(Fulfilment(journal, retry: TwoImmediate), "order-22");
        Assert.Equal(SagaStatus.Failed, compensating!.Status);
        Assert.StartsWith("Step 'create-shipment' failed: TimeoutException: no carrier Compensation of step 'charge-payment' failed:", compensating.Error, StringComparison.Ordinal);
        Assert.Contains("Saga 'fulfilment' instance 'order-22' (state 'charge-payment') holds data that cannot be read as Order", compensating.Error, StringComparison.Ordinal);
        Assert.Equal(["reserve-inventory", "charge-payment"], compensating.CompletedSteps);

        Assert.Empty(journal.Calls);
    }

    [Fact]
    public async Task Resume_OfAnInstanceLeftCompensating_CompensatesWhatIsStillDone()
    {
        var journal = new Journal();
        await using var services = Build();
        await services.GetRequiredService<ISagaStore>().SaveAsync(new SagaInstance
        {
            SagaType = "fulfilment",
            Id = "order-5",
            Status = SagaStatus.Compensating,
            CurrentStep = 1,
            CompletedSteps = ["reserve-inventory"],
            Error = "Step 'charge-payment' failed: declined",
            Data = """{"orderId":"order-5","done":["reserve"]}"""u8.ToArray(),
        });

        var ended = await services.GetRequiredService<SagaOrchestrator>().ResumeAsync(Fulfilment(journal), "order-5");

        Assert.Equal(SagaStatus.Compensated, ended!.Status);
        Assert.Equal(["release"], journal.Committed);
    }

    [Fact]
    public async Task TwoRunnersResumingOneInstance_CommitEachStepsEffectOnce()
    {
        var journal = new Journal();
        await using var services = Build();
        var store = services.GetRequiredService<ISagaStore>();
        await store.SaveAsync(new SagaInstance
        {
            SagaType = "fulfilment",
            Id = "order-6",
            Status = SagaStatus.Running,
            State = "reserve-inventory",
            Data = """{"orderId":"order-6"}"""u8.ToArray(),
        });
        var definition = Fulfilment(journal);
        var orchestrator = services.GetRequiredService<SagaOrchestrator>();

        var results = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() => orchestrator.ResumeAsync(definition, "order-6"))));

        var stored = await store.LoadAsync("fulfilment", "order-6");
        Assert.Equal(SagaStatus.Completed, stored!.Status);
        Assert.Equal(["reserve", "charge", "ship", "confirm"], journal.Committed);
        Assert.All(results, r => Assert.NotNull(r));
    }

    [Fact]
    public async Task StartingAnIdThatExists_Throws_AndRunsNothing()
    {
        var journal = new Journal();
        await using var services = Build();
        var orchestrator = services.GetRequiredService<SagaOrchestrator>();
        await orchestrator.StartAsync(Fulfilment(journal), "order-7", new Order());

        await Assert.ThrowsAsync<SagaConcurrencyException>(() => orchestrator.StartAsync(Fulfilment(journal), "order-7", new Order()));

        Assert.Equal(4, journal.Calls.Count);
    }

    [Fact]
    public async Task TheHost_ResumesUnfinishedInstancesOfRegisteredSagas_AtStart()
    {
        var journal = new Journal();
        var definition = Fulfilment(journal);
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddHerald(h => h.AddSaga(definition));
        await using var provider = services.BuildServiceProvider();
        var store = provider.GetRequiredService<ISagaStore>();
        await store.SaveAsync(new SagaInstance { SagaType = "fulfilment", Id = "left-running", Status = SagaStatus.Running, CurrentStep = 3, CompletedSteps = ["reserve-inventory", "charge-payment", "create-shipment"], Data = "{}"u8.ToArray() });
        await store.SaveAsync(new SagaInstance { SagaType = "fulfilment", Id = "done", Status = SagaStatus.Completed, CurrentStep = 4, Data = "{}"u8.ToArray() });

        var hosted = provider.GetServices<IHostedService>().OfType<BackgroundService>().Single(s => s.GetType().Name == "SagaResumeService");
        await hosted.StartAsync(CancellationToken.None);
        try
        {
            await Eventually.UntilAsync(async () => (await store.LoadAsync("fulfilment", "left-running"))!.Status == SagaStatus.Completed, "the unfinished instance completes");
        }
        finally
        {
            await hosted.StopAsync(CancellationToken.None);
        }

        Assert.Equal(["confirm"], journal.Committed);
    }

    [Fact]
    public void ABadDefinition_IsRejectedWhenBuilt_WithEveryReason()
    {
        var error = Assert.Throws<InvalidSagaDefinitionException>(() => SagaDefinition.Create<Order>(" ", s => s
            .Step("a", _ => ValueTask.CompletedTask)
            .Step("a", _ => ValueTask.CompletedTask, timeout: TimeSpan.Zero)
            .Step("", _ => ValueTask.CompletedTask)));
        var empty = Assert.Throws<InvalidSagaDefinitionException>(() => SagaDefinition.Create<Order>("empty", _ => { }));

        Assert.Equal(4, error.Problems.Count);
        Assert.Contains("The saga has no name.", error.Problems);
        Assert.Contains("Step name 'a' is used more than once.", error.Problems);
        Assert.Contains(error.Problems, p => p.Contains("timeout", StringComparison.Ordinal));
        Assert.Contains("Step 3 has no name.", error.Problems);
        Assert.Equal(["The saga has no steps."], empty.Problems);
    }

    [Fact]
    public void RegisteringTwoSagasOfOneName_Throws()
    {
        var journal = new Journal();
        var services = new ServiceCollection();

        var error = Assert.Throws<InvalidSagaDefinitionException>(() => services.AddHerald(h => h.AddSaga(Fulfilment(journal)).AddSaga(Fulfilment(journal))));

        Assert.Contains("registered already", error.Message, StringComparison.Ordinal);
    }
}
