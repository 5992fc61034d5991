using System.Text.Json;
using Herald.Cqrs;
using Herald.Conformance.EventSourcing;
using Herald.Conformance.Reliability;
using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Sagas;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;

namespace Herald.Conformance.Persistence;

/// <summary>
/// The contract of <see cref="IUnitOfWork"/> on one engine: an event append, outbox rows, the inbox mark and the application's
/// own table written in one unit of work commit together at <see cref="IUnitOfWork.CommitAsync"/> or not at all; a conflict
/// surfaces there and writes nothing; the outbox relay and the delivery's ack follow the commit. A persistence package's test
/// project derives from it, registers its engine in <see cref="UseEngine"/> and writes the user table through the engine's own
/// transaction. Every test runs a host of its own (transport: in memory, recorded).
/// </summary>
public abstract class UnitOfWorkConformance
{
    private static readonly TimeSpan InboxWindow = TimeSpan.FromMinutes(10);

    /// <summary>Registers the engine under test (<c>h.UseSqlite(...)</c>, <c>h.UsePostgres(...)</c>; nothing for in memory).</summary>
    protected abstract void UseEngine(HeraldBuilder herald);

    /// <summary>Writes a row keyed <paramref name="key"/> to the application's own table through the unit of work's transaction.</summary>
    protected abstract ValueTask WriteUserRowAsync(IUnitOfWork unitOfWork, string key);

    /// <summary>True when the application's table holds a committed row keyed <paramref name="key"/>.</summary>
    protected abstract ValueTask<bool> UserRowExistsAsync(IServiceProvider services, string key);

    /// <summary>True when an enlisted append is written only at the commit (false: at once, in the open transaction).</summary>
    protected virtual bool WritesAtTheCommit => true;

    /// <summary>Runs once the host started (its store is ready): create the application's table here.</summary>
    protected virtual ValueTask OnStartedAsync(IServiceProvider services) => ValueTask.CompletedTask;

    [Fact]
    public async Task Commit_WritesTheAppendOutboxRowsInboxMarkAndUserRow_Together()
    {
        await using var host = await StartAsync();
        var work = Work.New();

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            await EnlistAllAsync(scope.ServiceProvider, unitOfWork, work, ExpectedVersion.NoStream);
            await unitOfWork.CommitAsync();
        }

        Assert.Equal(1, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.True(await host.Get<IInbox>().IsHandledAsync(host.Endpoint, work.MessageId));
        Assert.True(await UserRowExistsAsync(host.Services, work.Key));
        await Eventually.UntilAsync(() => host.SentNotes().Contains(work.Key), "the outbox row is relayed once committed");
    }

    [Fact]
    public async Task ConflictAtCommit_ThrowsConcurrencyException_AndWritesNothing()
    {
        await using var host = await StartAsync();
        var work = Work.New();
        await host.Get<IEventStore>().AppendAsync(work.Stream, ExpectedVersion.NoStream, [Event(host)]);

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();

            // The stream exists already, so NoStream is stale: every engine reports it at the commit, not before.
            await EnlistAllAsync(scope.ServiceProvider, unitOfWork, work, ExpectedVersion.NoStream);
            await Assert.ThrowsAsync<ConcurrencyException>(() => unitOfWork.CommitAsync().AsTask());
            Assert.True(unitOfWork.IsCompleted);
        }

        await AssertNothingWrittenAsync(host, work, streamVersion: 1);
    }

    [Fact]
    public async Task Rollback_AfterAFailedHandler_WritesNothing()
    {
        await using var host = await StartAsync();
        var work = Work.New();

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            await EnlistAllAsync(scope.ServiceProvider, unitOfWork, work, ExpectedVersion.NoStream);
            await unitOfWork.RollbackAsync();
        }

        await AssertNothingWrittenAsync(host, work, streamVersion: 0);
    }

    [Fact]
    public async Task ScopeEndingWithoutCommit_WritesNothing()
    {
        await using var host = await StartAsync();
        var work = Work.New();

        await using (var scope = host.Services.CreateAsyncScope())
        {
            await EnlistAllAsync(scope.ServiceProvider, scope.ServiceProvider.GetRequiredService<IUnitOfWork>(), work, ExpectedVersion.NoStream);
        }

        await AssertNothingWrittenAsync(host, work, streamVersion: 0);
    }

    // Whether an enlisted dead letter was added is known only at the commit: the store says so after it, and not at all when
    // the unit of work rolls back.
    [Fact]
    public async Task ADeadLetterAddedInAUnitOfWork_ReportsAfterTheCommit_TrueThenFalseForTheSameId_AndNothingOnRollback()
    {
        await using var host = await StartAsync();
        var store = host.Get<IDeadLetterStore>();
        var deadLetter = DeadLetterStoreConformance.NewDeadLetter();
        var reports = new List<bool>();

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            await store.AddAsync(deadLetter, unitOfWork, reports.Add);
            await unitOfWork.RollbackAsync();
        }

        Assert.Empty(reports);
        Assert.Null(await store.GetAsync(deadLetter.Id));
        for (var attempt = 0; attempt < 2; attempt++)
        {
            await using var scope = host.Services.CreateAsyncScope();
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            await store.AddAsync(deadLetter, unitOfWork, reports.Add);
            Assert.Equal(attempt, reports.Count);
            await unitOfWork.CommitAsync();
        }

        Assert.Equal([true, false], reports);
        Assert.Equal(1, await store.CountAsync(new DeadLetterQuery { Endpoint = deadLetter.Endpoint }));
    }

    // A projection's retry deletes its dead letter in the unit of work of the event's writes: a rollback keeps the dead letter,
    // a commit removes it with them, and a commit that finds it gone (another retry's commit took it) writes nothing.
    [Fact]
    public async Task ADeadLetterDeletedInAUnitOfWork_StaysOnRollback_GoesOnCommit_AndOnceGoneFailsTheCommitWithNothingWritten()
    {
        await using var host = await StartAsync();
        var store = host.Get<IDeadLetterStore>();
        var deadLetter = DeadLetterStoreConformance.NewDeadLetter();
        await store.AddAsync(deadLetter);

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            await store.DeleteAsync(deadLetter.Id, unitOfWork);
            await unitOfWork.RollbackAsync();
        }

        Assert.NotNull(await store.GetAsync(deadLetter.Id));
        var first = Work.New();
        var second = Work.New();
        await using (var firstScope = host.Services.CreateAsyncScope())
        await using (var secondScope = host.Services.CreateAsyncScope())
        {
            // Two retries of it at once: the second deletes it while the first's delete is not committed yet (where the engine
            // deletes at once, PostgreSQL, that waits on the first's row lock until the first ends), and commits after it.
            var firstWork = firstScope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            var secondWork = secondScope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            await WriteUserRowAsync(firstWork, first.Key);
            await store.DeleteAsync(deadLetter.Id, firstWork);
            await WriteUserRowAsync(secondWork, second.Key);
            var firstCommitted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var secondDelete = Task.Run(async () =>
            {
                await store.DeleteAsync(deadLetter.Id, secondWork);
                await firstCommitted.Task;
                await secondWork.CommitAsync();
            });

            await firstWork.CommitAsync();
            firstCommitted.SetResult();
            var gone = await Assert.ThrowsAsync<DeadLetterNotFoundException>(() => secondDelete.WaitAsync(Eventually.DefaultTimeout));
            Assert.Equal(deadLetter.Id, gone.DeadLetterId);
            Assert.True(secondWork.IsCompleted);
        }

        Assert.Null(await store.GetAsync(deadLetter.Id));
        Assert.Equal(0, await store.CountAsync(new DeadLetterQuery { Endpoint = deadLetter.Endpoint }));
        Assert.True(await UserRowExistsAsync(host.Services, first.Key));
        Assert.False(await UserRowExistsAsync(host.Services, second.Key));
    }

    // An outbox whose unit of work had completed wrote the message at once, so one added after a rollback (work a failed
    // handler left running, a caller that caught the failure) left although its transaction never committed.
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AnOutboxSend_AfterItsUnitOfWorkCommittedOrRolledBack_Throws_AndNothingLeaves(bool committed)
    {
        await using var host = await StartAsync();
        var key = "late-" + Guid.NewGuid().ToString("N");

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var outbox = scope.ServiceProvider.GetRequiredService<IOutbox>();
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            if (committed)
            {
                await unitOfWork.CommitAsync();
            }
            else
            {
                await unitOfWork.RollbackAsync();
            }

            await Assert.ThrowsAsync<InvalidOperationException>(() => outbox.SendAsync(new UowNote(key)).AsTask());
            await Assert.ThrowsAsync<InvalidOperationException>(() => outbox.PublishAsync(new UowNote(key)).AsTask());
        }

        await AssertNoPendingRowAsync(host, key);
        await AssertNeverSentAsync(host, key);
        Assert.DoesNotContain(key, host.PublishedNotes());
    }

    [Fact]
    public async Task AnAppendAndASagaSave_CommitTogether()
    {
        await using var host = await StartAsync();
        var work = Work.New();
        var saga = NewSaga("placed");

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            await host.Get<IEventStore>().AppendAsync(work.Stream, ExpectedVersion.NoStream, [Event(host)], unitOfWork);
            await host.Get<ISagaStore>().SaveAsync(saga, unitOfWork);
            await unitOfWork.CommitAsync();
        }

        Assert.Equal(1, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        var stored = await host.Get<ISagaStore>().LoadAsync(saga.SagaType, saga.Id);
        Assert.Equal(("placed", 1L), (stored?.State, stored?.Version ?? 0));
    }

    [Fact]
    public async Task AStaleSagaSave_FailsTheCommit_AndTheAppendBesideItIsNotWritten()
    {
        await using var host = await StartAsync();
        var work = Work.New();
        var saga = NewSaga("placed");
        await host.Get<ISagaStore>().SaveAsync(saga);

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            await host.Get<IEventStore>().AppendAsync(work.Stream, ExpectedVersion.NoStream, [Event(host)], unitOfWork);

            // Saved once already, so version 0 is stale.
            await host.Get<ISagaStore>().SaveAsync(saga with { State = "shipped" }, unitOfWork);
            await Assert.ThrowsAsync<SagaConcurrencyException>(() => unitOfWork.CommitAsync().AsTask());
        }

        Assert.Equal(0, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        var stored = await host.Get<ISagaStore>().LoadAsync(saga.SagaType, saga.Id);
        Assert.Equal(("placed", 1L), (stored?.State, stored?.Version ?? 0));
    }

    [Fact]
    public async Task AStaleAppend_FailsTheCommit_AndTheSagaSaveBesideItIsNotWritten()
    {
        await using var host = await StartAsync();
        var work = Work.New();
        var saga = NewSaga("placed");
        await host.Get<IEventStore>().AppendAsync(work.Stream, ExpectedVersion.NoStream, [Event(host)]);

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            await host.Get<ISagaStore>().SaveAsync(saga, unitOfWork);
            await host.Get<IEventStore>().AppendAsync(work.Stream, ExpectedVersion.NoStream, [Event(host)], unitOfWork);
            await Assert.ThrowsAsync<ConcurrencyException>(() => unitOfWork.CommitAsync().AsTask());
        }

        Assert.Equal(1, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.Null(await host.Get<ISagaStore>().LoadAsync(saga.SagaType, saga.Id));
    }

    [Fact]
    public async Task AnAggregateSavedInAUnitOfWork_AfterItsStreamWasDeleted_ReportsTheVersionsItsEventsWereStoredAt()
    {
        await using var host = await StartAsync();
        var id = Guid.NewGuid().ToString("N");
        var direct = Counters(host.Services, unitOfWork: null);
        var first = new ConformanceCounter();
        first.Start(id);
        first.Increment(100);
        first.Increment(100);
        first.Increment(100);
        await direct.SaveAsync(first);
        await host.Get<IEventStore>().DeleteStreamAsync(direct.StreamNameFor(id), ExpectedVersion.Exactly(3));

        // The stream starts again after its deleted versions 1-3, though the aggregate loads as new (version 0): the two
        // saves land at 4-5 and 6, and each must report that (the second save's expected version is the first's result).
        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            var inUnit = Counters(scope.ServiceProvider, unitOfWork);
            var again = await inUnit.LoadAsync(id);
            Assert.Equal(0, again.Version);
            again.Increment(1);
            again.Increment(2);
            Assert.Equal(5, await inUnit.SaveAsync(again));
            Assert.Equal(5, again.Version);
            again.Increment(4);
            Assert.Equal(6, await inUnit.SaveAsync(again));
            await unitOfWork.CommitAsync();
        }

        Assert.Equal(6, await host.Get<IEventStore>().GetStreamVersionAsync(direct.StreamNameFor(id)));

        // The snapshot due at version 5 was taken in that commit, holding exactly versions 4-5.
        var snapshot = await host.Get<ISnapshotStore>().LoadSnapshotAsync(direct.StreamNameFor(id));
        Assert.Equal(5, snapshot?.Version);
        var loaded = await direct.LoadAsync(id);
        Assert.Equal((7, 6L, 1), (loaded.Total, loaded.Version, loaded.EventsApplied));

        // The next unit of work saves on top without a conflict.
        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            var inUnit = Counters(scope.ServiceProvider, unitOfWork);
            var next = await inUnit.LoadAsync(id);
            next.Increment(8);
            Assert.Equal(7, await inUnit.SaveAsync(next));
            await unitOfWork.CommitAsync();
        }

        Assert.Equal(15, (await direct.LoadAsync(id)).Total);
    }

    [Fact]
    public async Task AnAppendInAUnitOfWork_ToADeletedStream_ReturnsTheVersionItIsStoredAt()
    {
        await using var host = await StartAsync();
        var stream = Work.New().Stream;
        var store = host.Get<IEventStore>();
        await store.AppendAsync(stream, ExpectedVersion.NoStream, [Event(host), Event(host), Event(host)]);
        await store.DeleteStreamAsync(stream, ExpectedVersion.Exactly(3));

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            Assert.Equal(5, await store.AppendAsync(stream, ExpectedVersion.NoStream, [Event(host), Event(host)], unitOfWork));
            Assert.Equal(6, await store.AppendAsync(stream, ExpectedVersion.Exactly(5), [Event(host)], unitOfWork));
            await unitOfWork.CommitAsync();
        }

        Assert.Equal(6, await store.GetStreamVersionAsync(stream));
        var versions = new List<long>();
        await foreach (var recorded in store.ReadStreamAsync(stream))
        {
            versions.Add(recorded.Version);
        }

        Assert.Equal([4L, 5L, 6L], versions);
    }

    [Fact]
    public async Task AnAppendInAUnitOfWork_RetryingOneStored_ReturnsItsOriginalVersion_AndWritesNothingMore()
    {
        await using var host = await StartAsync();
        var stream = Work.New().Stream;
        var store = host.Get<IEventStore>();
        Envelope[] events = [Event(host), Event(host)];
        await store.AppendAsync(stream, ExpectedVersion.NoStream, events);
        await store.AppendAsync(stream, ExpectedVersion.Exactly(2), [Event(host)]);

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            Assert.Equal(2, await store.AppendAsync(stream, ExpectedVersion.NoStream, events, unitOfWork));
            await unitOfWork.CommitAsync();
        }

        Assert.Equal(3, await store.GetStreamVersionAsync(stream));
    }

    [Fact]
    public async Task AnAppendInAUnitOfWork_ToADeletedStreamStartedAgainAndDeletedBeforeTheCommit_IsNeverStoredElsewhere()
    {
        await using var host = await StartAsync();
        var stream = Work.New().Stream;
        var store = host.Get<IEventStore>();
        await store.AppendAsync(stream, ExpectedVersion.NoStream, [Event(host)]);
        await store.DeleteStreamAsync(stream, ExpectedVersion.Exactly(1));

        await using var scope = host.Services.CreateAsyncScope();
        var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
        Assert.Equal(3, await store.AppendAsync(stream, ExpectedVersion.NoStream, [Event(host), Event(host)], unitOfWork));

        // Another writer starts the stream again (version 2) and deletes it: NoStream still holds, but versions 2-3 are gone.
        var other = Task.Run(async () =>
        {
            await store.AppendAsync(stream, ExpectedVersion.Any, [Event(host)]);
            await store.DeleteStreamAsync(stream, ExpectedVersion.Any);
        });
        if (WritesAtTheCommit)
        {
            await other;
            await Assert.ThrowsAsync<ConcurrencyException>(() => unitOfWork.CommitAsync().AsTask());

            // Nothing of the unit of work was written: the stream starts again right after the other writer's version 2.
            Assert.Equal(3, (await store.AppendAsync(stream, ExpectedVersion.NoStream, [Event(host)])).StreamVersion);
        }
        else
        {
            // The append was written at once, holding the stream until the commit: the other writer goes after it.
            await unitOfWork.CommitAsync();
            await other;
            Assert.Equal(5, (await store.AppendAsync(stream, ExpectedVersion.NoStream, [Event(host)])).StreamVersion);
        }
    }

    [Fact]
    public async Task TwoUnitsOfWorkRacingOnOneStream_OneCommits_TheOtherConflictsAndWritesNothing()
    {
        await using var host = await StartAsync();
        var first = Work.New();
        var second = first with { MessageId = Guid.CreateVersion7(), Key = "row-" + Guid.NewGuid().ToString("N") };

        var firstScope = host.Services.CreateAsyncScope();
        var secondScope = host.Services.CreateAsyncScope();
        await using (firstScope)
        await using (secondScope)
        {
            var firstUnit = firstScope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            var secondUnit = secondScope.ServiceProvider.GetRequiredService<IUnitOfWork>();

            // Both saw the stream empty; the first to commit wins.
            await EnlistAllAsync(firstScope.ServiceProvider, firstUnit, first, ExpectedVersion.NoStream);
            var secondEnlisted = EnlistAllAsync(secondScope.ServiceProvider, secondUnit, second, ExpectedVersion.NoStream).AsTask();
            await firstUnit.CommitAsync();
            await secondEnlisted;
            await Assert.ThrowsAsync<ConcurrencyException>(() => secondUnit.CommitAsync().AsTask());
        }

        Assert.Equal(1, await host.Get<IEventStore>().GetStreamVersionAsync(first.Stream));
        Assert.True(await UserRowExistsAsync(host.Services, first.Key));
        Assert.False(await UserRowExistsAsync(host.Services, second.Key));
        Assert.False(await host.Get<IInbox>().IsHandledAsync(host.Endpoint, second.MessageId));
        await Eventually.UntilAsync(() => host.SentNotes().Contains(first.Key), "the winner's outbox row is relayed");
        await AssertNeverSentAsync(host, second.Key);
    }

    [Fact]
    public async Task TwoUnitsOfWorkSavingOneAggregate_EachWithASnapshotDue_TheLoserConflictsAndStoresNeitherEventsNorSnapshot()
    {
        await using var host = await StartAsync();
        var id = Guid.NewGuid().ToString("N");
        var direct = Counters(host.Services, unitOfWork: null);
        var stream = direct.StreamNameFor(id);
        var start = new ConformanceCounter();
        start.Start(id);
        for (var i = 0; i < 4; i++)
        {
            start.Increment(1);
        }

        await direct.SaveAsync(start);

        var firstScope = host.Services.CreateAsyncScope();
        var secondScope = host.Services.CreateAsyncScope();
        await using (firstScope)
        await using (secondScope)
        {
            var firstUnit = firstScope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            var secondUnit = secondScope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            var firstCounters = Counters(firstScope.ServiceProvider, firstUnit);
            var secondCounters = Counters(secondScope.ServiceProvider, secondUnit);

            // Both load version 4; each save crosses version 5, so each stages a snapshot with its events.
            var winner = await firstCounters.LoadAsync(id);
            var loser = await secondCounters.LoadAsync(id);
            winner.Increment(10);
            loser.Increment(1000);
            loser.Increment(1000);
            loser.Increment(1000);
            Assert.Equal(5, await firstCounters.SaveAsync(winner));
            var loserSaved = secondCounters.SaveAsync(loser);
            await firstUnit.CommitAsync();
            await loserSaved;
            await Assert.ThrowsAsync<ConcurrencyException>(() => secondUnit.CommitAsync().AsTask());
        }

        Assert.Equal(5, await host.Get<IEventStore>().GetStreamVersionAsync(stream));
        var snapshot = await host.Get<ISnapshotStore>().LoadSnapshotAsync(stream);
        Assert.Equal(5, snapshot?.Version);
        Assert.Equal(14, JsonSerializer.Deserialize<CounterState>(snapshot!.State.Span, JsonSerializerOptions.Web)!.Total);
        var loaded = await direct.LoadAsync(id);
        Assert.Equal((14, 5L, 0), (loaded.Total, loaded.Version, loaded.EventsApplied));
    }

    [Fact]
    public async Task HandledMessage_IsAckedAndItsOutboxRowsRelayed_OnlyAfterTheCommit()
    {
        var gate = new HandlerGate();
        await using var host = await StartAsync(gate);
        var work = Work.New();

        await host.Get<IMessageBus>().SendAsync(new UowWork(work.Stream, work.Key));
        await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // The handler has appended and sent through the outbox, and waits: nothing may be visible or acked yet.
        Assert.Equal(0, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.DoesNotContain(work.Key, host.SentNotes());
        Assert.Empty(host.Transport.Settlements);

        gate.Release.SetResult();
        await Eventually.UntilAsync(() => host.Transport.Settlements.Count == 1, "the delivery is settled after the commit");
        Assert.Equal(SettlementKind.Ack, host.Transport.Settlements[0].Kind);
        Assert.Equal(1, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.True(await UserRowExistsAsync(host.Services, work.Key));
        await Eventually.UntilAsync(() => host.SentNotes().Contains(work.Key), "the outbox row is relayed after the commit");
    }

    [Fact]
    public async Task HandledMessage_WhoseCommitConflicts_IsNotAcked_AndSendsNothing()
    {
        // The handler waits before its writes (an engine that writes early would otherwise hold the stream's lock).
        var gate = new HandlerGate { HoldBeforeWrites = true };
        await using var host = await StartAsync(gate);
        var work = Work.New();

        await host.Get<IMessageBus>().SendAsync(new UowWork(work.Stream, work.Key));
        await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // Someone else starts the stream while the handler runs: its NoStream append conflicts at the commit.
        await host.Get<IEventStore>().AppendAsync(work.Stream, ExpectedVersion.NoStream, [Event(host)]);
        gate.Release.SetResult();

        await Eventually.UntilAsync(() => host.Transport.Settlements.Count >= 1, "the failed attempt is settled");
        Assert.NotEqual(SettlementKind.Ack, host.Transport.Settlements[0].Kind);
        Assert.Equal(1, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.False(await UserRowExistsAsync(host.Services, work.Key));
        Assert.False(await host.Get<IInbox>().IsHandledAsync(host.Endpoint, host.Transport.Settlements[0].Envelope.MessageId), "the inbox mark rolled back with the rest");
        await AssertNeverSentAsync(host, work.Key);
    }

    [Fact]
    public async Task HandlerThatFailsAfterItsWrites_InThePipelineWithTheInbox_WritesNothing_NotEvenTheInboxMark()
    {
        await using var host = await StartAsync();
        var work = Work.New();

        // The handler appends, writes its row and sends through the outbox (by a command in its unit of work), then throws.
        await host.Get<IMessageBus>().SendAsync(new UowDelegate(work.Stream, work.Key, Fail: true));

        await Eventually.UntilAsync(() => host.Transport.Settlements.Count >= 1, "the failed attempt is settled");
        var settled = host.Transport.Settlements[0];
        Assert.NotEqual(SettlementKind.Ack, settled.Kind);
        Assert.Equal(0, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.False(await UserRowExistsAsync(host.Services, work.Key));
        Assert.False(await host.Get<IInbox>().IsHandledAsync(host.Endpoint, settled.Envelope.MessageId), "the inbox mark rolled back with the rest");
        await AssertNeverSentAsync(host, work.Key);
    }

    /// <summary>The lifetimes a handler that sends a command is registered with: both must join the message's unit of work.</summary>
    public static TheoryData<ServiceLifetime> SenderLifetimes => new() { ServiceLifetime.Singleton, ServiceLifetime.Scoped };

    // Issue 9: a singleton handler's ICommandBus ran the command in a unit of work of its own, committed when the command
    // returned, unless the handler had touched context.Services. No inbox here: the inbox made every attempt ambient anyway.
    [Theory]
    [MemberData(nameof(SenderLifetimes))]
    public async Task CommandSentFromAHandler_CommitsWithTheHandledMessage_NotBefore_Issue9(ServiceLifetime senderLifetime)
    {
        var gate = new HandlerGate();
        await using var host = await StartAsync(gate, useInbox: false, senderLifetime);
        var work = Work.New();

        await host.Get<IMessageBus>().SendAsync(new UowDelegate(work.Stream, work.Key, Fail: false));
        await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // The command has returned, and the handler waits: its append, outbox row and user row wait for the message's commit.
        Assert.Equal(0, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.False(await UserRowExistsAsync(host.Services, work.Key));
        Assert.DoesNotContain(work.Key, host.SentNotes());
        Assert.Empty(host.Transport.Settlements);

        gate.Release.SetResult();
        await Eventually.UntilAsync(() => host.Transport.Settlements.Count == 1, "the delivery is settled after the commit");
        Assert.Equal(SettlementKind.Ack, host.Transport.Settlements[0].Kind);
        Assert.Equal(1, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.True(await UserRowExistsAsync(host.Services, work.Key));
        await Eventually.UntilAsync(() => host.SentNotes().Contains(work.Key), "the command's outbox row is relayed after the commit");
    }

    // Issue 9: the command's writes had committed on their own before the handler failed.
    [Theory]
    [MemberData(nameof(SenderLifetimes))]
    public async Task CommandSentFromAHandlerThatThenFails_WritesNothing_Issue9(ServiceLifetime senderLifetime)
    {
        await using var host = await StartAsync(useInbox: false, senderLifetime: senderLifetime);
        var work = Work.New();

        await host.Get<IMessageBus>().SendAsync(new UowDelegate(work.Stream, work.Key, Fail: true));

        await Eventually.UntilAsync(() => host.Transport.Settlements.Count >= 1, "the failed attempt is settled");
        Assert.NotEqual(SettlementKind.Ack, host.Transport.Settlements[0].Kind);
        Assert.Equal(0, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.False(await UserRowExistsAsync(host.Services, work.Key));
        await AssertNeverSentAsync(host, work.Key);
    }

    // A handler that caught the failure of a command it sent committed the command's writes made before it threw (its append,
    // outbox row and user row were enlisted in the handler's unit of work): half of a failed command. Now the failure dooms the
    // unit of work, the attempt fails, and the next attempt or message starts afresh.
    [Theory]
    [MemberData(nameof(SenderLifetimes))]
    public async Task CommandThatFailsAfterItsWrites_CaughtByTheHandler_FailsTheMessage_AndWritesNothing(ServiceLifetime senderLifetime)
    {
        var gate = new HandlerGate();
        gate.Release.SetResult();
        await using var host = await StartAsync(gate, useInbox: false, senderLifetime);
        var failed = Work.New();
        var next = Work.New();

        await host.Get<IMessageBus>().SendAsync(new UowCatch(failed.Stream, failed.Key));

        await Eventually.UntilAsync(() => host.Transport.Settlements.Count >= 1, "the failed attempt is settled");
        Assert.NotEqual(SettlementKind.Ack, host.Transport.Settlements[0].Kind);
        Assert.Equal(0, await host.Get<IEventStore>().GetStreamVersionAsync(failed.Stream));
        Assert.False(await UserRowExistsAsync(host.Services, failed.Key));

        await host.Get<IMessageBus>().SendAsync(new UowDelegate(next.Stream, next.Key, Fail: false));
        await Eventually.UntilAsync(() => host.Transport.Settlements.Any(s => s.Kind == SettlementKind.Ack), "the next message is acked");
        Assert.Equal(1, await host.Get<IEventStore>().GetStreamVersionAsync(next.Stream));
        Assert.True(await UserRowExistsAsync(host.Services, next.Key));
        await AssertNeverSentAsync(host, failed.Key);
    }

    // Issue 9: a message sent or published through a handler's injected IMessageBus left at once, before the handler's unit of
    // work committed (a MessageContext send went through the outbox). In a handler it now goes through the outbox too.
    [Theory]
    [MemberData(nameof(SenderLifetimes))]
    public async Task MessagesSentThroughAnInjectedBusFromAHandler_LeaveOnceAfterTheCommit_NotBefore_Issue9(ServiceLifetime senderLifetime)
    {
        var gate = new HandlerGate();
        await using var host = await StartAsync(gate, useInbox: false, senderLifetime);
        var work = Work.New();

        await host.Get<IMessageBus>().SendAsync(new UowBusWork(work.Key, Fail: false), new DeliveryOptions { CorrelationId = work.Key });
        await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // The handler has sent and published through its bus and waits: nothing may have left yet.
        Assert.DoesNotContain(work.Key, host.SentNotes());
        Assert.DoesNotContain(work.Key, host.PublishedNotes());
        Assert.Empty(host.Transport.Settlements);

        gate.Release.SetResult();
        await Eventually.UntilAsync(() => host.Transport.Settlements.Count == 1, "the delivery is settled after the commit");
        Assert.Equal(SettlementKind.Ack, host.Transport.Settlements[0].Kind);
        await Eventually.UntilAsync(
            () => host.SentNotes().Contains(work.Key) && host.PublishedNotes().Contains(work.Key),
            "the bus's messages are relayed after the commit");
        await AssertNeverSentAsync(host, "nothing-else");
        Assert.Single(host.SentNotes(), work.Key);
        Assert.Single(host.PublishedNotes(), work.Key);

        // They follow the handled message, as a MessageContext send does.
        var incoming = host.Transport.Settlements[0].Envelope;
        var sent = host.Transport.Sent.Single(s => s.Destination == NotesQueue && Text(s.Envelope) == work.Key).Envelope;
        Assert.Equal(work.Key, sent.CorrelationId);
        Assert.Equal(incoming.MessageId.ToString(), sent.CausationId);
    }

    // Issue 9: the handler's bus had sent its messages before the handler failed; every attempt sent them again.
    [Theory]
    [MemberData(nameof(SenderLifetimes))]
    public async Task MessagesSentThroughAnInjectedBusFromAHandlerThatThenFails_NeverLeave_Issue9(ServiceLifetime senderLifetime)
    {
        await using var host = await StartAsync(useInbox: false, senderLifetime: senderLifetime, deadLetterAfterRetries: true);
        var work = Work.New();

        await host.Get<IMessageBus>().SendAsync(new UowBusWork(work.Key, Fail: true));

        // An immediate retry fails as well, then the message is dead-lettered (and acked).
        await Eventually.UntilAsync(
            async () => (await host.Get<Herald.Reliability.DeadLetters.IDeadLetterStore>().ListAsync(new() { Endpoint = host.Endpoint })).Count == 1,
            "the message is dead-lettered once its retries are exhausted");
        await AssertNeverSentAsync(host, work.Key);
        Assert.DoesNotContain(work.Key, host.PublishedNotes());
        await AssertNoPendingRowAsync(host, work.Key);
    }

    [Fact]
    public async Task MessageSentThroughTheBusOutsideAnyHandler_LeavesAtOnce()
    {
        await using var host = await StartAsync(useInbox: false);
        var key = "row-" + Guid.NewGuid().ToString("N");

        await host.Get<IMessageBus>().SendAsync(new UowNote(key));
        await host.Get<IMessageBus>().PublishAsync(new UowNote(key));

        // No unit of work runs: the transport has both when the calls return, and the outbox holds neither.
        Assert.Single(host.SentNotes(), key);
        Assert.Single(host.PublishedNotes(), key);
        await AssertNoPendingRowAsync(host, key);
    }

    [Fact]
    public async Task CommandSentOutsideAnyHandler_CommitsInAUnitOfWorkOfItsOwn()
    {
        await using var host = await StartAsync(useInbox: false);
        var work = Work.New();

        await host.Get<ICommandBus>().SendAsync(new UowCommand(work.Stream, work.Key));

        Assert.Equal(1, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.True(await UserRowExistsAsync(host.Services, work.Key));
        await Eventually.UntilAsync(() => host.SentNotes().Contains(work.Key), "the command's outbox row is relayed once committed");
    }

    // A throwing callback stopped the ones registered after it, so the in-memory inbox's mark (ended by a callback) stayed
    // pending and the relay was never woken. Every engine runs every callback and reports the failure as is.
    [Fact]
    public async Task CommitCallbacks_AllRun_WhenOneThrows_AndItsFailureSurfacesAsIs()
    {
        await using var host = await StartAsync();
        var failure = new InvalidOperationException("the first commit callback fails");
        var ran = new List<string>();

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            unitOfWork.OnCommitted(_ => throw failure);
            unitOfWork.OnCommitted(_ => Ran(ran, "second"));
            unitOfWork.OnRolledBack(_ => Ran(ran, "rolled back"));

            var thrown = await Assert.ThrowsAsync<InvalidOperationException>(() => unitOfWork.CommitAsync().AsTask());

            Assert.Same(failure, thrown);
            Assert.True(unitOfWork.IsCompleted);
        }

        Assert.Equal(["second"], ran);
    }

    [Fact]
    public async Task RollbackCallbacks_AllRun_WhenSeveralThrow_AndTheFailuresSurfaceTogetherInOrder()
    {
        await using var host = await StartAsync();
        var first = new InvalidOperationException("the first rollback callback fails");
        var third = new TimeoutException("the third rollback callback fails");
        var ran = new List<string>();

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            unitOfWork.OnRolledBack(_ => throw first);
            unitOfWork.OnRolledBack(_ => Ran(ran, "second"));
            unitOfWork.OnRolledBack(async _ =>
            {
                await Task.Yield();
                throw third;
            });
            unitOfWork.OnRolledBack(_ => Ran(ran, "fourth"));

            var thrown = await Assert.ThrowsAsync<AggregateException>(() => unitOfWork.RollbackAsync().AsTask());

            Assert.Equal<Exception>([first, third], thrown.InnerExceptions);
        }

        Assert.Equal(["second", "fourth"], ran);
    }

    [Fact]
    public async Task AFailedCommit_RunsEveryRollbackCallback_AndReportsItsOwnFailureFirst()
    {
        await using var host = await StartAsync();
        var work = Work.New();
        await host.Get<IEventStore>().AppendAsync(work.Stream, ExpectedVersion.NoStream, [Event(host)]);
        var callbackFailure = new InvalidOperationException("a rollback callback fails");
        var ran = new List<string>();

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            unitOfWork.OnRolledBack(_ => throw callbackFailure);
            unitOfWork.OnRolledBack(_ => Ran(ran, "second"));
            await EnlistAllAsync(scope.ServiceProvider, unitOfWork, work, ExpectedVersion.NoStream);

            var thrown = await Assert.ThrowsAsync<AggregateException>(() => unitOfWork.CommitAsync().AsTask());

            Assert.Collection(thrown.InnerExceptions, e => Assert.IsType<ConcurrencyException>(e), e => Assert.Same(callbackFailure, e));
        }

        Assert.Equal(["second"], ran);
        await AssertNothingWrittenAsync(host, work, streamVersion: 1);
    }

    // A read-model change runs again on the document as it is at the commit (another unit may have changed it since), so it
    // can throw there, after the commit began; the append beside it must not stay written without it.
    [Fact]
    public async Task AReadModelChangeThatThrowsAtTheCommit_FailsIt_AndTheAppendBesideItIsNotWritten()
    {
        await using var host = await StartAsync();
        var work = Work.New();
        var document = "doc-" + Guid.NewGuid().ToString("N");

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = await EnlistAnAppendAndAChangeThatWillThrowAsync(host, scope.ServiceProvider, work, document);

            var thrown = await Assert.ThrowsAnyAsync<Exception>(() => unitOfWork.CommitAsync().AsTask());
            Assert.Contains(ChangeFailure, thrown.ToString(), StringComparison.Ordinal);
            Assert.True(unitOfWork.IsCompleted);
        }

        Assert.Equal(0, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.Equal("""{"by":"other"}""", (await host.Get<Herald.Projections.IReadModelStore>().GetAsync(ReadModelTable, document))?.Replace(" ", string.Empty, StringComparison.Ordinal));
    }

    // The contract of a failed commit whatever failed in it: the rollback callbacks all run, and its own failure comes first.
    [Fact]
    public async Task AReadModelChangeThatThrowsAtTheCommit_WithARollbackCallbackThatFails_ReportsTheChangesFailureFirst()
    {
        await using var host = await StartAsync();
        var work = Work.New();
        var callbackFailure = new InvalidOperationException("a rollback callback fails");
        var ran = new List<string>();

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = await EnlistAnAppendAndAChangeThatWillThrowAsync(host, scope.ServiceProvider, work, "doc-" + Guid.NewGuid().ToString("N"));
            unitOfWork.OnRolledBack(_ => throw callbackFailure);
            unitOfWork.OnRolledBack(_ => Ran(ran, "second"));

            var thrown = await Assert.ThrowsAsync<AggregateException>(() => unitOfWork.CommitAsync().AsTask());

            Assert.Collection(
                thrown.InnerExceptions,
                e => Assert.Contains(ChangeFailure, e.ToString(), StringComparison.Ordinal),
                e => Assert.Same(callbackFailure, e));
        }

        Assert.Equal(["second"], ran);
        Assert.Equal(0, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
    }

    [Fact]
    public async Task ASecondCommit_DoesNothing_AndTheCallbacksRanOnce()
    {
        await using var host = await StartAsync();
        var work = Work.New();
        var ran = new List<string>();

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = await EnlistAllRecordingTheCallbacksAsync(scope.ServiceProvider, work, ran);
            await unitOfWork.CommitAsync();

            await unitOfWork.CommitAsync();
            await unitOfWork.RollbackAsync();
        }

        Assert.Equal(["committed"], ran);
        Assert.Equal(1, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.True(await UserRowExistsAsync(host.Services, work.Key));
    }

    [Fact]
    public async Task AUnitOfWorkWhoseScopeEnded_RefusesEveryWrite_AndItsCommitWritesNothing()
    {
        await using var host = await StartAsync();
        var work = Work.New();
        IUnitOfWork unitOfWork;

        await using (var scope = host.Services.CreateAsyncScope())
        {
            unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
        }

        Assert.True(unitOfWork.IsCompleted);
        await Assert.ThrowsAsync<InvalidOperationException>(() => host.Get<IEventStore>().AppendAsync(work.Stream, ExpectedVersion.NoStream, [Event(host)], unitOfWork).AsTask());
        await Assert.ThrowsAsync<InvalidOperationException>(() => host.Get<IInbox>().TryMarkHandledAsync(host.Endpoint, work.MessageId, InboxWindow, unitOfWork).AsTask());
        Assert.Throws<InvalidOperationException>(() => unitOfWork.OnCommitted(_ => ValueTask.CompletedTask));
        await unitOfWork.CommitAsync();

        Assert.Equal(0, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.False(await host.Get<IInbox>().IsHandledAsync(host.Endpoint, work.MessageId));
    }

    // Cancelled before the commit began: like any cancelled call, it throws and does nothing, and the unit is over.
    [Fact]
    public async Task ACommitWithACancelledToken_Throws_WritesNothing_AndRunsTheRollbackCallbacks()
    {
        await using var host = await StartAsync();
        var work = Work.New();
        var ran = new List<string>();

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = await EnlistAllRecordingTheCallbacksAsync(scope.ServiceProvider, work, ran);

            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => unitOfWork.CommitAsync(new CancellationToken(canceled: true)).AsTask());
            Assert.True(unitOfWork.IsCompleted);
            await unitOfWork.CommitAsync();
        }

        Assert.Equal(["rolled back"], ran);
        await AssertNothingWrittenAsync(host, work, streamVersion: 0);
    }

    private async Task<IUnitOfWork> EnlistAllRecordingTheCallbacksAsync(IServiceProvider services, Work work, List<string> ran)
    {
        var unitOfWork = services.GetRequiredService<IUnitOfWork>();
        unitOfWork.OnCommitted(_ => Ran(ran, "committed"));
        unitOfWork.OnRolledBack(_ => Ran(ran, "rolled back"));
        await EnlistAllAsync(services, unitOfWork, work, ExpectedVersion.NoStream);
        return unitOfWork;
    }

    private const string ChangeFailure = "the document exists already";

    // An append and a read-model change that finds, at the commit, the document another unit of work made meanwhile, and throws.
    private static async Task<IUnitOfWork> EnlistAnAppendAndAChangeThatWillThrowAsync(TestHost host, IServiceProvider services, Work work, string document)
    {
        var readModels = host.Get<Herald.Projections.IReadModelStore>();
        var unitOfWork = services.GetRequiredService<IUnitOfWork>();
        await services.GetRequiredService<IEventStore>().AppendAsync(work.Stream, ExpectedVersion.NoStream, [Event(host)], unitOfWork);
        await readModels.UpdateAsync(ReadModelTable, 1, document, current => current is null ? """{"by":"first"}""" : throw new InvalidOperationException(ChangeFailure), unitOfWork);

        await using (var other = host.Services.CreateAsyncScope())
        {
            var otherUnit = other.ServiceProvider.GetRequiredService<IUnitOfWork>();
            await readModels.UpdateAsync(ReadModelTable, 1, document, _ => """{"by":"other"}""", otherUnit);
            await otherUnit.CommitAsync();
        }

        return unitOfWork;
    }

    // The in-memory inbox ends its mark in callbacks registered after the user's: a second copy of the message waited for
    // that mark's outcome until its cancellation.
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AnInboxMark_WhoseUnitOfWorkHadAThrowingCallbackBeforeIt_IsSettledAtTheEnd(bool commit)
    {
        await using var host = await StartAsync();
        var messageId = Guid.CreateVersion7();

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            unitOfWork.OnCommitted(_ => throw new InvalidOperationException("a commit callback fails"));
            unitOfWork.OnRolledBack(_ => throw new InvalidOperationException("a rollback callback fails"));
            Assert.True(await host.Get<IInbox>().TryMarkHandledAsync(host.Endpoint, messageId, InboxWindow, unitOfWork));

            await Assert.ThrowsAsync<InvalidOperationException>(() => (commit ? unitOfWork.CommitAsync() : unitOfWork.RollbackAsync()).AsTask());
        }

        await using (var scope = host.Services.CreateAsyncScope())
        {
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();

            // Committed: the second copy is a duplicate; rolled back: it is marked anew. Either way it does not wait.
            var marked = await host.Get<IInbox>().TryMarkHandledAsync(host.Endpoint, messageId, InboxWindow, unitOfWork, deadline.Token);

            Assert.Equal(!commit, marked);
            await unitOfWork.RollbackAsync();
        }
    }

    private static ValueTask Ran(List<string> ran, string name)
    {
        lock (ran)
        {
            ran.Add(name);
        }

        return ValueTask.CompletedTask;
    }

    private static AggregateRepository<ConformanceCounter> Counters(IServiceProvider services, IUnitOfWork? unitOfWork) => new(
        services.GetRequiredService<IEventStore>(),
        ConformanceCounter.CreateRegistry(),
        services.GetRequiredService<IMessageSerializer>(),
        TimeProvider.System,
        unitOfWork,
        services.GetRequiredService<ISnapshotStore>(),
        new AggregateOptions { Category = "uowcounter", SnapshotEvery = 5 });

    private async ValueTask EnlistAllAsync(IServiceProvider services, IUnitOfWork unitOfWork, Work work, ExpectedVersion expected)
    {
        await services.GetRequiredService<IEventStore>().AppendAsync(work.Stream, expected, [Event(services)], unitOfWork);
        Assert.True(await services.GetRequiredService<IInbox>().TryMarkHandledAsync(HostEndpoint(services), work.MessageId, InboxWindow, unitOfWork));
        await services.GetRequiredService<IOutbox>().SendAsync(new UowNote(work.Key));
        await WriteUserRowAsync(unitOfWork, work.Key);
    }

    private async Task AssertNothingWrittenAsync(TestHost host, Work work, long streamVersion)
    {
        Assert.Equal(streamVersion, await host.Get<IEventStore>().GetStreamVersionAsync(work.Stream));
        Assert.False(await host.Get<IInbox>().IsHandledAsync(host.Endpoint, work.MessageId));
        Assert.False(await UserRowExistsAsync(host.Services, work.Key));
        await AssertNeverSentAsync(host, work.Key);
    }

    // The relay sends rows in commit order, so once a row committed afterwards has left, an earlier one would have too.
    private static async Task AssertNeverSentAsync(TestHost host, string key)
    {
        var marker = "marker-" + Guid.NewGuid().ToString("N");
        await using (var scope = host.Services.CreateAsyncScope())
        {
            await scope.ServiceProvider.GetRequiredService<IOutbox>().SendAsync(new UowNote(marker));
            await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        }

        await Eventually.UntilAsync(() => host.SentNotes().Contains(marker), "a row committed afterwards is relayed");
        Assert.DoesNotContain(key, host.SentNotes());
    }

    // The store may be shared with other tests: look for this key's rows, not for an empty outbox.
    private static async Task AssertNoPendingRowAsync(TestHost host, string key)
    {
        var pending = await host.Get<IOutboxStore>().FetchPendingAsync(100_000);
        Assert.DoesNotContain(pending, row => row.Destination is NotesQueue or NoteTopic && Text(row.Envelope) == key);
    }

    private static Envelope Event(IServiceProvider services) =>
        services.GetRequiredService<EnvelopeFactory>().Create(new UowNote("event"));

    private static Envelope Event(TestHost host) => Event(host.Services);

    private static SagaInstance NewSaga(string state) => new()
    {
        SagaType = "uow-conformance-saga",
        Id = Guid.NewGuid().ToString("N"),
        Status = SagaStatus.Running,
        State = state,
        Data = "{}"u8.ToArray(),
    };

    private static string HostEndpoint(IServiceProvider services) => services.GetRequiredService<Microsoft.Extensions.Options.IOptions<HeraldOptions>>().Value.EndpointName;

    private const string NotesQueue = "uow-notes";

    private const string ReadModelTable = "uow_conformance";

    private const string NoteTopic = "uow-conformance-note";

    private static string Text(Envelope envelope) => JsonSerializer.Deserialize<UowNote>(envelope.Body.Span, JsonSerializerOptions.Web)!.Text;

    private async Task<TestHost> StartAsync(HandlerGate? gate = null, bool useInbox = true, ServiceLifetime senderLifetime = ServiceLifetime.Scoped, bool deadLetterAfterRetries = false)
    {
        var endpoint = "uow-" + Guid.NewGuid().ToString("N")[..12];
        var transport = new RecordingTransport(new InMemoryTransport(InMemoryTransportOptions.Default, TimeProvider.System));
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(gate ?? new HandlerGate());
        builder.Services.AddSingleton<Func<IUnitOfWork, string, ValueTask>>(WriteUserRowAsync);
        builder.Services.AddHerald(h =>
        {
            h.UseTransport(_ => transport);
            h.Configure(o =>
            {
                o.EndpointName = endpoint;
                o.MaxConcurrency = 1;
            });
            h.ConfigureRetries(r =>
            {
                if (deadLetterAfterRetries)
                {
                    r.Immediate(1).Delayed(0, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
                }
                else
                {
                    r.Immediate(0).Delayed(1, TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(1));
                }
            });
            h.AddMessageType<UowNote>().AddMessageType<UowWork>().AddHandler<UowWorkHandler>().Route<UowNote>(NotesQueue).Route<UowWork>(endpoint);
            h.AddMessageType<UowDelegate>().AddHandler<UowDelegateHandler>(senderLifetime).AddHandler<UowCommandHandler>().Route<UowDelegate>(endpoint);
            h.AddMessageType<UowBusWork>().AddHandler<UowBusHandler>(senderLifetime).Route<UowBusWork>(endpoint);
            h.AddMessageType<UowCatch>().AddHandler<UowCatchHandler>(senderLifetime).Route<UowCatch>(endpoint);
            h.UseOutbox(o => o.PollInterval = TimeSpan.FromMilliseconds(200));
            if (useInbox)
            {
                h.UseInbox();
            }

            UseEngine(h);
        });
        var host = builder.Build();
        await host.StartAsync();
        await OnStartedAsync(host.Services);
        return new TestHost(host, transport, endpoint);
    }

    /// <summary>A note sent through the outbox; its text says which unit of work sent it.</summary>
    [MessageType("uow-conformance-note")]
    public sealed record UowNote(string Text);

    /// <summary>Work for the handler: append to the stream, send a note and write the user row keyed <paramref name="Key"/>.</summary>
    [MessageType("uow-conformance-work")]
    public sealed record UowWork(string Stream, string Key);

    /// <summary>Work for a handler that hands it to <see cref="UowCommand"/> through the command bus, then fails when <paramref name="Fail"/>.</summary>
    [MessageType("uow-conformance-delegate")]
    public sealed record UowDelegate(string Stream, string Key, bool Fail);

    /// <summary>Work for a handler that sends and publishes a note keyed <paramref name="Key"/> through an injected bus, then fails when <paramref name="Fail"/>.</summary>
    [MessageType("uow-conformance-bus-work")]
    public sealed record UowBusWork(string Key, bool Fail);

    /// <summary>Work for a handler that sends it as a <see cref="UowCommand"/> that fails after its writes, and catches the failure.</summary>
    [MessageType("uow-conformance-catch")]
    public sealed record UowCatch(string Stream, string Key);

    /// <summary>A command: append to the stream, send a note through the outbox and write the user row keyed <paramref name="Key"/>, then fail when <paramref name="Fail"/>.</summary>
    public sealed record UowCommand(string Stream, string Key, bool Fail = false) : ICommand;

    /// <summary>Lets a test hold the handler after it enlisted its writes and before its unit of work commits.</summary>
    public sealed class HandlerGate
    {
        /// <summary>Completed when the handler has enlisted every write.</summary>
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Complete it to let the handler go on.</summary>
        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>True: the handler waits before its writes instead of after them.</summary>
        public bool HoldBeforeWrites { get; init; }

        /// <summary>Signals the test and waits for it.</summary>
        public async Task PassAsync(CancellationToken cancellationToken)
        {
            Entered.TrySetResult();
            await Release.Task.WaitAsync(cancellationToken);
        }
    }

    /// <summary>Enlists an append, an outbox note and a user row in the message's unit of work, waiting at the gate after (or before) them.</summary>
    public sealed class UowWorkHandler(IEventStore store, IUnitOfWork unitOfWork, EnvelopeFactory envelopes, HandlerGate gate, Func<IUnitOfWork, string, ValueTask> writeUserRow)
        : IMessageHandler<UowWork>
    {
        /// <inheritdoc />
        public async ValueTask HandleAsync(UowWork message, MessageContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(message);
            ArgumentNullException.ThrowIfNull(context);
            if (gate.HoldBeforeWrites)
            {
                await gate.PassAsync(cancellationToken);
            }

            await store.AppendAsync(message.Stream, ExpectedVersion.NoStream, [envelopes.Create(new UowNote("event"))], unitOfWork, cancellationToken);
            await context.SendAsync(new UowNote(message.Key), cancellationToken: cancellationToken);
            await writeUserRow(unitOfWork, message.Key);
            if (!gate.HoldBeforeWrites)
            {
                await gate.PassAsync(cancellationToken);
            }
        }
    }

    /// <summary>Sends the work on as a command through an injected <see cref="ICommandBus"/> (the handler never touches the context's services), then fails or waits at the gate.</summary>
    public sealed class UowDelegateHandler(ICommandBus commands, HandlerGate gate) : IMessageHandler<UowDelegate>
    {
        /// <inheritdoc />
        public async ValueTask HandleAsync(UowDelegate message, MessageContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(message);
            await commands.SendAsync(new UowCommand(message.Stream, message.Key), cancellationToken);
            if (message.Fail)
            {
                throw new InvalidOperationException("The handler fails after its command returned.");
            }

            await gate.PassAsync(cancellationToken);
        }
    }

    /// <summary>Sends and publishes a note through an injected <see cref="IMessageBus"/> (never the context), then fails or waits at the gate.</summary>
    public sealed class UowBusHandler(IMessageBus bus, HandlerGate gate) : IMessageHandler<UowBusWork>
    {
        /// <inheritdoc />
        public async ValueTask HandleAsync(UowBusWork message, MessageContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(message);
            await bus.SendAsync(new UowNote(message.Key), cancellationToken: cancellationToken);
            await bus.PublishAsync(new UowNote(message.Key), cancellationToken: cancellationToken);
            if (message.Fail)
            {
                throw new InvalidOperationException("The handler fails after its bus sent.");
            }

            await gate.PassAsync(cancellationToken);
        }
    }

    /// <summary>Sends the work as a command that fails after its writes, through an injected <see cref="ICommandBus"/>, and catches the failure.</summary>
    public sealed class UowCatchHandler(ICommandBus commands) : IMessageHandler<UowCatch>
    {
        /// <inheritdoc />
        public async ValueTask HandleAsync(UowCatch message, MessageContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(message);
            try
            {
                await commands.SendAsync(new UowCommand(message.Stream, message.Key, Fail: true), cancellationToken);
            }
            catch (InvalidOperationException)
            {
                // The handler carries on as if the command had done nothing.
            }
        }
    }

    /// <summary>Enlists an append, an outbox note and a user row in the unit of work the command runs in.</summary>
    public sealed class UowCommandHandler(IEventStore store, IUnitOfWork unitOfWork, IOutbox outbox, EnvelopeFactory envelopes, Func<IUnitOfWork, string, ValueTask> writeUserRow)
        : ICommandHandler<UowCommand>
    {
        /// <inheritdoc />
        public async ValueTask HandleAsync(UowCommand command, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(command);
            await store.AppendAsync(command.Stream, ExpectedVersion.NoStream, [envelopes.Create(new UowNote("event"))], unitOfWork, cancellationToken);
            await outbox.SendAsync(new UowNote(command.Key), cancellationToken: cancellationToken);
            await writeUserRow(unitOfWork, command.Key);
            if (command.Fail)
            {
                throw new InvalidOperationException("The command fails after its writes.");
            }
        }
    }

    private sealed record Work(string Stream, string Key, Guid MessageId)
    {
        public static Work New() => new("uowconf-" + Guid.NewGuid().ToString("N"), "row-" + Guid.NewGuid().ToString("N"), Guid.CreateVersion7());
    }

    private sealed class TestHost(IHost host, RecordingTransport transport, string endpoint) : IAsyncDisposable
    {
        public IServiceProvider Services => host.Services;

        public RecordingTransport Transport => transport;

        public string Endpoint => endpoint;

        public T Get<T>()
            where T : notnull => host.Services.GetRequiredService<T>();

        public List<string> SentNotes() => [.. transport.Sent.Where(s => s.Destination == NotesQueue).Select(s => Text(s.Envelope))];

        // A published note goes to its topic, its logical type name.
        public List<string> PublishedNotes() => [.. transport.Sent.Where(s => s.Destination == NoteTopic).Select(s => Text(s.Envelope))];

        public async ValueTask DisposeAsync()
        {
            await host.StopAsync();
            host.Dispose();
        }
    }
}
