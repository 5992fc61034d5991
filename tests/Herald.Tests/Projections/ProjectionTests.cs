using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.EventSourcing;
using Herald.EventSourcing.InMemory;
using Herald.EventSourcing.Upcasting;
using Herald.Hosting;
using Herald.Messages;
using Herald.Persistence;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Herald.Tests.EventSourcing;
using Herald.Tests.Persistence;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Tests.Projections;

/// <summary>Projections on the in-memory stores: configuration errors, lag and stall reports, and what cannot be rebuilt.</summary>
public sealed class ProjectionTests
{
    [Theory]
    [InlineData(0, 500, "BatchSize")]
    [InlineData(500, 0, "CommitEvery")]
    public void BadProjectionOptions_AreRejectedAtStart_NamingTheSetting(int batchSize, int commitEvery, string setting)
    {
        var services = new ServiceCollection();
        services.AddHerald(h => h.AddProjection(new Gated()).ConfigureProjections(o =>
        {
            o.BatchSize = batchSize;
            o.CommitEvery = commitEvery;
        }));
        using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => provider.GetRequiredService<Microsoft.Extensions.Options.IOptions<ProjectionOptions>>().Value);

        Assert.Contains("ProjectionOptions." + setting, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AProjectionWithoutHandlers_OrWithATakenName_IsRefusedAtConfiguration()
    {
        var services = new ServiceCollection();
        services.AddHerald(h =>
        {
            var empty = Assert.Throws<ArgumentException>(() => h.AddProjection(new Empty()));
            Assert.Contains("handles no event type", empty.Message, StringComparison.Ordinal);
            h.AddProjection(new Gated());
            var twice = Assert.Throws<ArgumentException>(() => h.AddProjection(new Gated()));
            Assert.Contains("registered already", twice.Message, StringComparison.Ordinal);
        });
        Assert.Throws<ArgumentException>(() => new BadName());
        Assert.Throws<ArgumentException>(() => new ReadModelTable<Doc>("Not-Valid"));
    }

    [Fact]
    public async Task WritingATableTheProjectionDidNotDeclare_DeadLettersTheEventWithTheReason()
    {
        using var host = await StartAsync(new Undeclared());
        var position = await AppendAsync(host, "undeclared");
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Eventually.UntilAsync(async () => (await manager.GetStatusAsync("undeclared")).IsRunningHere, "the projection runs");
        await manager.WaitForPositionAsync("undeclared", position).WaitAsync(Eventually.DefaultTimeout);

        var deadLetter = Assert.Single(await host.Services.GetRequiredService<Herald.Reliability.DeadLetters.IDeadLetterStore>().ListAsync(new() { Endpoint = "undeclared" }));
        Assert.Contains("without declaring it", deadLetter.ErrorMessage, StringComparison.Ordinal);
        await host.StopAsync();
    }

    [Fact]
    public async Task AProjectionThatDoesNotMove_IsReportedStalled_WithItsLag_ThenRecovers()
    {
        var gated = new Gated();
        using var host = await StartAsync(gated);
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Eventually.UntilAsync(async () => (await manager.GetStatusAsync("gated")).IsRunningHere, "the projection runs");
        await AppendAsync(host, "g1");
        var last = await AppendAsync(host, "g2");

        var stalled = await Eventually.ValueAsync(
            async () => await manager.GetStatusAsync("gated") is { IsStalled: true } status ? status : null,
            "the blocked projection is reported stalled");
        Assert.True(stalled.Lag >= 1, $"lag {stalled.Lag}");
        Assert.Equal(last, stalled.HeadPosition);

        gated.Open.TrySetResult();
        await manager.WaitForPositionAsync("gated", last).WaitAsync(Eventually.DefaultTimeout);
        var caughtUp = await manager.GetStatusAsync("gated");
        Assert.False(caughtUp.IsStalled);
        Assert.Equal(0, caughtUp.Lag);
        await host.StopAsync();
    }

    [Fact]
    public async Task ARunnerThatFailed_ThenLostItsLeadership_LeavesNoFailureOnTheNodeThatNoLongerRunsIt()
    {
        // Regression (round-7 audit of the projections): the failure of a runner stayed in its node's status after the node
        // lost the leadership (during the wait before starting again), so that node reported the projection stalled with
        // that error, and its health check Degraded, for as long as another node ran it.
        var election = new ScriptedElection();
        var upcasters = new EventUpcasterRegistry().Add("projection-tests-happened", 1, _ => throw new InvalidOperationException("no v2"));
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h => h
            .AddProjection(new Gated())
            .Configure(o => o.StartConsumer = false)
            .ConfigureProjections(o =>
            {
                // The runner, once failed, waits here for an hour: the loss comes during that wait.
                o.RetryInterval = TimeSpan.FromHours(1);
                o.StatusInterval = TimeSpan.FromMilliseconds(50);
            }));
        builder.Services.Replace(ServiceDescriptor.Singleton<ILeaderElection>(election));

        // A store whose reads of $all fail for good (an upcaster that cannot migrate), which stops the runner.
        builder.Services.Replace(ServiceDescriptor.Singleton<IEventStore>(sp => new UpcastingEventStore(sp.GetRequiredService<InMemoryEventStore>(), upcasters)));
        using var host = builder.Build();
        await host.StartAsync();
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        var lease = await election.NextTryAsync();
        Assert.NotNull(lease);
        await AppendAsync(host, "cannot-upcast");
        await Eventually.UntilAsync(async () => (await manager.GetStatusAsync("gated")).LastError is not null, "the runner is reported failed");

        // Another node leads from now on: this one tries again only after the retry interval (an hour).
        lease.Lose();
        await Eventually.UntilAsync(() => lease.Released, "the lost lease is released");

        await Eventually.UntilAsync(
            async () => await manager.GetStatusAsync("gated") is { IsRunningHere: false, LastError: null, IsStalled: false },
            "the node that lost the leadership reports no failure of its own");
        Assert.False(election.Tries.TryPeek(out _), "the node tried to lead again before the retry interval passed");
        await host.StopAsync();
    }

    [Fact]
    public async Task ARebuildAskedOfALeaderThatLosesTheLeadershipBeforeTakingIt_IsHandedToTheNextLeader_NotLeftWaiting()
    {
        // Regression (round-7 audit of the projections): a rebuild asked of the node that ran the projection waited on that
        // node's queue of requests, which only that node's next leadership would read: when it lost the leadership first
        // (here, while another rebuild held it), the call waited for good, and no leader was asked.
        var election = new ScriptedElection();
        var projection = new HeldInRebuild();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h => h
            .AddProjection(projection)
            .Configure(o => o.StartConsumer = false)
            .ConfigureProjections(o =>
            {
                // After the loss, this node tries to lead again only in an hour: another node leads meanwhile.
                o.RetryInterval = TimeSpan.FromHours(1);
                o.StatusInterval = TimeSpan.FromMilliseconds(50);
            }));
        builder.Services.Replace(ServiceDescriptor.Singleton<ILeaderElection>(election));
        using var host = builder.Build();
        await host.StartAsync();
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        var lease = await election.NextTryAsync();
        Assert.NotNull(lease);
        var position = await AppendAsync(host, "held");
        await Eventually.UntilAsync(async () => (await manager.GetStatusAsync(HeldInRebuild.ProjectionName)).IsRunningHere, "the projection runs");
        await manager.WaitForPositionAsync(HeldInRebuild.ProjectionName, position).WaitAsync(Eventually.DefaultTimeout);

        // The first rebuild holds the leader (its replay waits); the second waits behind it.
        var first = manager.RebuildAsync(HeldInRebuild.ProjectionName);
        await projection.Replaying.Task.WaitAsync(Eventually.DefaultTimeout);
        using var asking = new CancellationTokenSource();
        var second = manager.RebuildAsync(HeldInRebuild.ProjectionName, asking.Token);

        lease.Lose();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first.WaitAsync(Eventually.DefaultTimeout));
        await Eventually.UntilAsync(() => lease.Released, "the lost lease is released");

        // The second is asked of whichever node leads now, through the store, as from a node that never ran it.
        var checkpoints = host.Services.GetRequiredService<ICheckpointStore>();
        await Eventually.UntilAsync(
            async () => await checkpoints.GetCheckpointAsync("$projection-rebuild-requested:" + HeldInRebuild.ProjectionName) > 0,
            "the rebuild is asked of the next leader");
        Assert.False(second.IsCompleted);
        await asking.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => second);
        await host.StopAsync();
    }

    [Fact]
    public async Task AnInlineProjection_CannotBeRebuilt_AndReportsNoLag()
    {
        using var host = await StartAsync(new Gated(), ProjectionMode.Inline);
        var manager = host.Services.GetRequiredService<ProjectionManager>();

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => manager.RebuildAsync("gated"));
        Assert.Contains("inline", error.Message, StringComparison.Ordinal);
        var status = await manager.GetStatusAsync("gated");
        Assert.Equal(ProjectionMode.Inline, status.Mode);
        Assert.Null(status.Position);
        await Assert.ThrowsAsync<KeyNotFoundException>(async () => await manager.GetStatusAsync("missing"));
        await host.StopAsync();
    }

    [Fact]
    public async Task AStoredEventThatNoLongerReads_OfAProjectionThatDeadLettersThem_IsDeadLetteredAndCounted_AndTheEventsAroundItAreApplied()
    {
        // The runner stopped on it (UnreadableEventException), with no way to move past it but a hand-made checkpoint. Then
        // its dead letter was not counted: herald.messages.dead_lettered, the gauge and the alert missed it.
        var counted = new ConcurrentQueue<(long Value, string? Type)>();
        using var listener = Diagnostics.DiagnosticsTests.ListenToDeadLettered(SkipsUnreadable.ProjectionName, (value, type) => counted.Enqueue((value, type)));
        using var host = BuildOverFaultyReads(new SkipsUnreadable());

        // Stored before the runner starts, so its first read meets the spoiled event between two good ones, in one batch.
        await AppendAsync(host, "before");
        var spoiled = await AppendAsync(host, "spoiled");
        var after = await AppendAsync(host, "after");
        ((FaultyReadsStore)host.Services.GetRequiredService<IEventStore>()).UnreadableAt = spoiled;
        await host.StartAsync();
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Eventually.UntilAsync(async () => (await manager.GetStatusAsync(SkipsUnreadable.ProjectionName)).Position >= after, "the projection passes the spoiled event");

        var readModels = host.Services.GetRequiredService<ReadModels>();
        Assert.NotNull(await readModels.GetAsync(SkipsUnreadable.Docs, "before"));
        Assert.Null(await readModels.GetAsync(SkipsUnreadable.Docs, "spoiled"));
        Assert.NotNull(await readModels.GetAsync(SkipsUnreadable.Docs, "after"));
        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = SkipsUnreadable.ProjectionName }));
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.Equal(typeof(UnreadableEventException).FullName, deadLetter.ErrorType);
        Assert.Contains($"position {spoiled} (stream 'spoiled')", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal("projection-tests-happened", deadLetter.MessageType);
        Assert.Contains("spoiled", System.Text.Encoding.UTF8.GetString(deadLetter.Envelope.Body.Span), StringComparison.Ordinal);
        Assert.Null((await manager.GetStatusAsync(SkipsUnreadable.ProjectionName)).LastError);
        var monitor = host.Services.GetRequiredService<DeadLetterMonitor>();
        await Eventually.UntilAsync(
            () => monitor.Counts.TryGetValue(SkipsUnreadable.ProjectionName, out var held) && held == 1,
            "herald.dead_letters reports the projection's dead letter");
        Assert.Equal([(1L, "projection-tests-happened")], counted);
        await host.StopAsync();
    }

    [Fact]
    public async Task AStoredEventBelowItsTypesRegisteredVersion_ThatNoUpcasterMigrates_IsDeadLetteredByTheProjection_NotReadAsTheCurrentShape()
    {
        using var host = await StartAsync(new KeepsReshaped());
        var factory = host.Services.GetRequiredService<EnvelopeFactory>();
        var store = host.Services.GetRequiredService<IEventStore>();
        var old = factory.Create(new Reshaped("old")) with { SchemaVersion = 1 };
        await store.AppendAsync("reshaped-old", ExpectedVersion.Any, [old]);
        var current = (await store.AppendAsync("reshaped-new", ExpectedVersion.Any, [factory.Create(new Reshaped("new"))])).LastPosition;
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Eventually.UntilAsync(async () => (await manager.GetStatusAsync(KeepsReshaped.ProjectionName)).IsRunningHere, "the projection runs");
        await manager.WaitForPositionAsync(KeepsReshaped.ProjectionName, current).WaitAsync(Eventually.DefaultTimeout);

        var readModels = host.Services.GetRequiredService<ReadModels>();
        Assert.Null(await readModels.GetAsync(KeepsReshaped.Docs, "old"));
        Assert.NotNull(await readModels.GetAsync(KeepsReshaped.Docs, "new"));
        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = KeepsReshaped.ProjectionName }));
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.Equal(typeof(EventUpcastingException).FullName, deadLetter.ErrorType);
        Assert.Equal(old.MessageId, deadLetter.Envelope.MessageId);
        await host.StopAsync();
    }

    [Fact]
    public async Task RetryingTheDeadLetterOfAStoredEventThatNoLongerRead_AppliesWhatWasSalvagedOfIt_ToTheProjection()
    {
        // Regression (projection dead letters): the retry sent it to a queue named after the projection, which nothing
        // consumes, and deleted the dead letter.
        using var host = BuildOverFaultyReads(new SkipsUnreadable());
        var spoiled = await AppendAsync(host, "salvaged");
        var after = await AppendAsync(host, "after");
        ((FaultyReadsStore)host.Services.GetRequiredService<IEventStore>()).UnreadableAt = spoiled;
        await host.StartAsync();
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Eventually.UntilAsync(async () => (await manager.GetStatusAsync(SkipsUnreadable.ProjectionName)).Position >= after, "the projection passes the spoiled event");
        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(DeadLetterQuery.All));
        Assert.Equal(DeadLetterOrigin.Projection, deadLetter.Origin);

        Assert.Equal(DeadLetterRetryOutcome.Retried, await host.Services.GetRequiredService<DeadLetterManager>().RetryAsync(deadLetter.Id));

        Assert.Equal(new Doc("salvaged"), await host.Services.GetRequiredService<ReadModels>().GetAsync(SkipsUnreadable.Docs, "salvaged"));
        Assert.Empty(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(DeadLetterQuery.All));
        Assert.Equal(after, await host.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync(SkipsUnreadable.ProjectionName));
        await host.StopAsync();
    }

    [Fact]
    public async Task WorkAHandlerLeftRunning_AfterItsBatchCommitted_RunsInAUnitOfWorkOfItsOwn_NotInTheBatchsDisposedOne()
    {
        // The contexts of a batch were never ended: a command sent from work a handler left running joined the batch's unit
        // of work after its commit, and failed on its disposed scope (ObjectDisposedException) instead of running in its own.
        var projection = new LeavesWorkRunning();
        using var host = Build(projection);

        // Stored before the runner starts, so its first read applies both in one batch.
        await AppendAsync(host, "first");
        var last = await AppendAsync(host, "second");
        await host.StartAsync();
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Eventually.UntilAsync(async () => (await manager.GetStatusAsync(LeavesWorkRunning.ProjectionName)).Position >= last, "the batch commits");

        projection.Go.SetResult();
        var late = await projection.Late.Task.WaitAsync(Eventually.DefaultTimeout);
        await late.WaitAsync(Eventually.DefaultTimeout);
        await host.StopAsync();
    }

    [Fact]
    public async Task TheLagGauge_WhileTheStoreCannotBeRead_ReportsNothing_AndReportsAgainOnceItCan()
    {
        // Round-9 item: the gauge kept reporting the last lag through an outage, a healthy-looking flat line.
        var name = "lag-" + Guid.NewGuid().ToString("N")[..8];
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h => h
            .AddProjection(new Named(name))
            .Configure(o => o.StartConsumer = false)
            .ConfigureProjections(o => o.StatusInterval = TimeSpan.FromMilliseconds(50)));
        builder.Services.Replace(ServiceDescriptor.Singleton<IEventStore>(sp => new HeadUnreachableStore(sp.GetRequiredService<InMemoryEventStore>())));
        using var host = builder.Build();
        var store = (HeadUnreachableStore)host.Services.GetRequiredService<IEventStore>();
        var reported = 0;
        using var listener = new System.Diagnostics.Metrics.MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Name == Herald.Diagnostics.MetricNames.ProjectionLag)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((_, _, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == Herald.Diagnostics.MetricNames.ProjectionTag && Equals(tag.Value, name))
                {
                    reported++;
                }
            }
        });
        listener.Start();
        bool Reported()
        {
            reported = 0;
            listener.RecordObservableInstruments();
            return reported > 0;
        }

        await host.StartAsync();
        await Eventually.UntilAsync(Reported, "the lag is reported");

        store.Down = true;
        await Eventually.UntilAsync(() => !Reported(), "the lag is not reported while the store cannot be read");

        store.Down = false;
        await Eventually.UntilAsync(Reported, "the lag is reported again once read");
        await host.StopAsync();
    }

    [Fact]
    public async Task EventsStoredUnderAFormerTypeName_AreAppliedByTheProjection_WhenTheUpcastersRenameIt()
    {
        // A team renamed "projection-tests-said" to "projection-tests-happened": the projection's filter names the current
        // type, and the stored events of the former name are read (and applied) as the current type.
        var upcasters = new EventUpcasterRegistry().AddRename("projection-tests-said", "projection-tests-happened");
        using var host = Build(new SkipsUnreadable(), services => services.AddSingleton(upcasters));
        var factory = host.Services.GetRequiredService<EnvelopeFactory>();
        var store = host.Services.GetRequiredService<IEventStore>();
        await store.AppendAsync("said", ExpectedVersion.Any, [factory.Create(new Happened("said")) with { MessageType = "projection-tests-said" }]);
        var last = await AppendAsync(host, "happened");
        await host.StartAsync();
        var manager = host.Services.GetRequiredService<ProjectionManager>();

        await manager.WaitForPositionAsync(SkipsUnreadable.ProjectionName, last).WaitAsync(Eventually.DefaultTimeout);

        var readModels = host.Services.GetRequiredService<ReadModels>();
        Assert.NotNull(await readModels.GetAsync(SkipsUnreadable.Docs, "said"));
        Assert.NotNull(await readModels.GetAsync(SkipsUnreadable.Docs, "happened"));
        Assert.Empty(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = SkipsUnreadable.ProjectionName }));
        await host.StopAsync();
    }

    private static async Task<long> AppendAsync(IHost host, string stream)
    {
        var envelope = host.Services.GetRequiredService<EnvelopeFactory>().Create(new Happened(stream));
        return (await host.Services.GetRequiredService<IEventStore>().AppendAsync(stream, ExpectedVersion.Any, [envelope])).LastPosition;
    }

    private static async Task<IHost> StartAsync(Projection projection, ProjectionMode mode = ProjectionMode.Async)
    {
        var host = Build(projection, mode: mode);
        await host.StartAsync();
        return host;
    }

    // Not started: a test may store events first, so the runner's first read finds them all (one batch).
    // A host whose event store reads as FaultyReadsStore says (set its UnreadableAt to spoil an event).
    private static IHost BuildOverFaultyReads(Projection projection) =>
        Build(projection, services => services.Replace(ServiceDescriptor.Singleton<IEventStore>(sp => new FaultyReadsStore(sp.GetRequiredService<InMemoryEventStore>()))));

    private static IHost Build(Projection projection, Action<IServiceCollection>? services = null, ProjectionMode mode = ProjectionMode.Async)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h => h
            .AddProjection(projection, mode)
            .ConfigureRetries(r => r.NoRetries())
            .Configure(o => o.StartConsumer = false)
            .ConfigureProjections(o =>
            {
                o.StallAfter = TimeSpan.FromMilliseconds(200);
                o.StatusInterval = TimeSpan.FromMilliseconds(50);
                o.RetryInterval = TimeSpan.FromMilliseconds(50);
            }));
        services?.Invoke(builder.Services);
        return builder.Build();
    }

    [MessageType("projection-tests-happened")]
    public sealed record Happened(string Name);

    public sealed record Doc(string Name);

    [MessageType("projection-tests-reshaped", Version = 2)]
    public sealed record Reshaped(string Name);

    private sealed class KeepsReshaped : Projection
    {
        public const string ProjectionName = "keeps-reshaped";

        public static readonly ReadModelTable<Doc> Docs = new("keeps_reshaped_docs");

        public KeepsReshaped()
            : base(ProjectionName)
        {
            Table(Docs);
            On<Reshaped>((e, context, _) => context.UpsertAsync(Docs, e.Name, new Doc(e.Name)));
        }
    }

    private sealed class Named : Projection
    {
        public Named(string name)
            : base(name) => On<Happened>((_, _, _) => ValueTask.CompletedTask);
    }

    /// <summary>An event store whose head cannot be read while <see cref="Down"/> (the database is unreachable).</summary>
    private sealed class HeadUnreachableStore(IEventStore inner) : Herald.Tests.EventSourcing.DelegatingEventStore(inner)
    {
        public volatile bool Down;

        public override ValueTask<long> GetLastPositionAsync(CancellationToken cancellationToken = default) =>
            Down ? ValueTask.FromException<long>(new TimeoutException("the database is unreachable")) : base.GetLastPositionAsync(cancellationToken);
    }

    private sealed class Empty() : Projection("empty");

    private sealed class BadName() : Projection("bad name!");

    private sealed class Undeclared : Projection
    {
        private static readonly ReadModelTable<Doc> Docs = new("undeclared_docs");

        public Undeclared()
            : base("undeclared") => On<Happened>((e, context, _) => context.UpsertAsync(Docs, e.Name, new Doc(e.Name)));
    }

    /// <summary>Applies at once in its first generation; a rebuild's replay waits for good, so a test holds its leader busy.</summary>
    private sealed class HeldInRebuild : Projection
    {
        public const string ProjectionName = "held-in-rebuild";

        private static readonly ReadModelTable<Doc> Docs = new("held_docs");

        public HeldInRebuild()
            : base(ProjectionName)
        {
            Table(Docs);
            On<Happened>(async (e, context, token) =>
            {
                if (context.Generation > 1)
                {
                    Replaying.TrySetResult();
                    await Task.Delay(Timeout.Infinite, token);
                }

                await context.UpsertAsync(Docs, e.Name, new Doc(e.Name));
            });
        }

        public TaskCompletionSource Replaying { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Keeps one document per event, and dead-letters a stored event that no longer reads.</summary>
    private sealed class SkipsUnreadable : Projection
    {
        public const string ProjectionName = "skips-unreadable";

        public static readonly ReadModelTable<Doc> Docs = new("skips_unreadable_docs");

        public SkipsUnreadable()
            : base(ProjectionName)
        {
            DeadLetterUnreadableEvents = true;
            Table(Docs);
            On<Happened>((e, context, _) => context.UpsertAsync(Docs, e.Name, new Doc(e.Name)));
        }
    }

    /// <summary>Its first event's handler leaves work running that, once let go, runs a unit of work of its own.</summary>
    private sealed class LeavesWorkRunning : Projection
    {
        public const string ProjectionName = "leaves-work-running";

        private static readonly ReadModelTable<Doc> Docs = new("leaves_work_running_docs");

        public LeavesWorkRunning()
            : base(ProjectionName)
        {
            Table(Docs);
            On<Happened>((e, context, _) =>
            {
                var runner = context.Services.GetRequiredService<UnitOfWorkRunner>();
                Late.TrySetResult(Task.Run(async () =>
                {
                    await Go.Task;
                    await runner.RunAsync((services, _) =>
                    {
                        services.GetRequiredService<IUnitOfWork>();
                        return ValueTask.CompletedTask;
                    });
                }, CancellationToken.None));
                return context.UpsertAsync(Docs, e.Name, new Doc(e.Name));
            });
        }

        public TaskCompletionSource Go { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource<Task> Late { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Waits on a gate before applying anything, so a test can hold it behind the head.</summary>
    private sealed class Gated : Projection
    {
        private static readonly ReadModelTable<Doc> Docs = new("gated_docs");

        public Gated()
            : base("gated")
        {
            Table(Docs);
            On<Happened>(async (e, context, token) =>
            {
                await Open.Task.WaitAsync(token);
                await context.UpsertAsync(Docs, e.Name, new Doc(e.Name));
            });
        }

        public TaskCompletionSource Open { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
