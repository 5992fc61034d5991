using Herald.EventSourcing;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Reliability;
using Herald.Reliability.Outbox;
using Herald.Conformance;
using Herald.Conformance.Reliability;

namespace Herald.Postgres.Tests.Reliability;

/// <summary>Issue 4: the outbox rows, the inbox mark and an append of one unit of work commit together or not at all.</summary>
public sealed class PostgresUnitOfWorkTests : IAsyncLifetime
{
    private static readonly TimeSpan Window = TimeSpan.FromMinutes(10);
    private readonly string _schema = PostgresTestDatabase.NewSchema();
    private PostgresEventStore _store = null!;
    private PostgresOutboxStore _outbox = null!;
    private PostgresInbox _inbox = null!;

    public async Task InitializeAsync()
    {
        _store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = _schema });
        _outbox = new PostgresOutboxStore(_store);
        _inbox = new PostgresInbox(_store);
    }

    public async Task DisposeAsync()
    {
        await _store.DisposeAsync();
        await PostgresTestDatabase.DropSchemaAsync(_schema);
    }

    [Fact]
    public async Task Commit_WritesTheAppendTheOutboxRowsAndTheInboxMark_Together()
    {
        var messageId = Guid.CreateVersion7();
        var stream = TestEvents.NewStream();
        var rows = new[] { NewRow(), NewRow() };
        var committed = 0;
        await using var unitOfWork = _store.BeginUnitOfWork();

        Assert.True(await _inbox.TryMarkHandledAsync("orders", messageId, Window, unitOfWork));
        await _store.AppendAsync(stream, ExpectedVersion.NoStream, [TestEvents.New()], unitOfWork);
        await _store.AppendAsync(stream, ExpectedVersion.Exactly(1), TestEvents.Many(2), unitOfWork);
        await _outbox.AddAsync(rows, unitOfWork);
        unitOfWork.OnCommitted(_ =>
        {
            committed++;
            return ValueTask.CompletedTask;
        });

        // Written, but invisible outside the transaction until it commits.
        Assert.Equal(0L, await CountAsync("events"));
        Assert.Equal(0L, await _outbox.CountPendingAsync());
        Assert.False(await _inbox.IsHandledAsync("orders", messageId));

        await unitOfWork.CommitAsync();

        Assert.Equal(1, committed);
        Assert.Equal(3, await _store.GetStreamVersionAsync(stream));
        Assert.Equal(3, (await TestEvents.ReadStreamAsync(_store, stream)).Count);
        Assert.Equal(rows.Select(r => r.Id), (await _outbox.FetchPendingAsync(10)).Select(r => r.Id));
        Assert.True(await _inbox.IsHandledAsync("orders", messageId));
        Assert.False(await _inbox.TryMarkHandledAsync("orders", messageId, Window));
    }

    [Fact]
    public async Task Rollback_WritesNothing_AndFreesTheInboxMark()
    {
        var messageId = Guid.CreateVersion7();
        var stream = TestEvents.NewStream();
        var rolledBack = 0;
        var unitOfWork = _store.BeginUnitOfWork();
        Assert.True(await _inbox.TryMarkHandledAsync("orders", messageId, Window, unitOfWork));
        await _store.AppendAsync(stream, ExpectedVersion.NoStream, [TestEvents.New()], unitOfWork);
        await _outbox.AddAsync([NewRow()], unitOfWork);
        unitOfWork.OnRolledBack(_ =>
        {
            rolledBack++;
            return ValueTask.CompletedTask;
        });

        await unitOfWork.RollbackAsync();
        await unitOfWork.CommitAsync();

        Assert.Equal(1, rolledBack);
        Assert.True(unitOfWork.IsCompleted);
        Assert.Equal(0L, await CountAsync("events"));
        Assert.Equal(0, await _store.GetStreamVersionAsync(stream));
        Assert.Equal(0L, await _outbox.CountPendingAsync());
        Assert.True(await _inbox.TryMarkHandledAsync("orders", messageId, Window));
    }

    [Fact]
    public async Task AStaleAppend_FailsTheCommitWithAConcurrencyException_AndNothingIsWritten()
    {
        var stream = TestEvents.NewStream();
        await _store.AppendAsync(stream, ExpectedVersion.NoStream, [TestEvents.New()]);
        var messageId = Guid.CreateVersion7();
        var unitOfWork = _store.BeginUnitOfWork();
        Assert.True(await _inbox.TryMarkHandledAsync("orders", messageId, Window, unitOfWork));
        await _outbox.AddAsync([NewRow()], unitOfWork);

        // PostgreSQL finds the conflict at once, but reports it where every engine does: at the commit (issue 9).
        await _store.AppendAsync(stream, ExpectedVersion.NoStream, [TestEvents.New()], unitOfWork);
        await Assert.ThrowsAsync<ConcurrencyException>(() => unitOfWork.CommitAsync().AsTask());
        Assert.True(unitOfWork.IsCompleted);

        Assert.Equal(1, await _store.GetStreamVersionAsync(stream));
        Assert.Equal(0L, await _outbox.CountPendingAsync());
        Assert.False(await _inbox.IsHandledAsync("orders", messageId));
    }

    [Fact]
    public async Task Commit_AfterAStatementFailedInTheDatabase_ThrowsAndWritesNothing()
    {
        var rolledBack = 0;
        var unitOfWork = _store.BeginUnitOfWork();
        var row = NewRow();
        await _outbox.AddAsync([row], unitOfWork);
        unitOfWork.OnRolledBack(_ =>
        {
            rolledBack++;
            return ValueTask.CompletedTask;
        });

        // The same id twice violates the unique key, which aborts the transaction.
        await Assert.ThrowsAsync<Npgsql.PostgresException>(() => _outbox.AddAsync([row], unitOfWork).AsTask());

        await Assert.ThrowsAsync<InvalidOperationException>(() => unitOfWork.CommitAsync().AsTask());
        Assert.Equal(1, rolledBack);
        Assert.Null(await _outbox.GetAsync(row.Id));
    }

    [Fact]
    public async Task ADuplicateOnAnotherConnection_WaitsForTheUnitOfWork_AndIsADuplicateOnceItCommits()
    {
        var messageId = Guid.CreateVersion7();
        var unitOfWork = _store.BeginUnitOfWork();
        Assert.True(await _inbox.TryMarkHandledAsync("orders", messageId, Window, unitOfWork));

        var duplicate = _inbox.TryMarkHandledAsync("orders", messageId, Window).AsTask();
        await Eventually.UntilAsync(
            async () => await PostgresTestDatabase.ScalarAsync<long>(
                $"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%{_schema}%inbox%'") > 0,
            "the duplicate's mark waits on the unit of work's row");
        Assert.False(duplicate.IsCompleted);
        await unitOfWork.CommitAsync();

        Assert.False(await duplicate);
    }

    [Fact]
    public async Task DisposingWithoutCommit_RollsBack_AndAUnitOfWorkThatWroteNothingTakesNoConnection()
    {
        var rolledBack = false;
        await using (var idle = _store.BeginUnitOfWork())
        {
            Assert.False(idle.HasTransaction);
        }

        await using (var unitOfWork = _store.BeginUnitOfWork())
        {
            await _outbox.AddAsync([NewRow()], unitOfWork);
            Assert.True(unitOfWork.HasTransaction);
            unitOfWork.OnRolledBack(_ =>
            {
                rolledBack = true;
                return ValueTask.CompletedTask;
            });
        }

        Assert.True(rolledBack);
        Assert.Equal(0L, await _outbox.CountPendingAsync());
    }

    [Fact]
    public async Task AUnitOfWorkOfAnotherStore_IsRefused()
    {
        await using var other = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = _schema });
        await using var foreign = other.BeginUnitOfWork();

        await Assert.ThrowsAsync<ArgumentException>(() => _outbox.AddAsync([NewRow()], foreign).AsTask());
        await Assert.ThrowsAsync<ArgumentException>(() => _store.AppendAsync(TestEvents.NewStream(), ExpectedVersion.Any, [TestEvents.New()], foreign).AsTask());
    }

    [Fact]
    public async Task ConcurrentUnitsOfWork_CommitIndependently()
    {
        var units = Enumerable.Range(0, 16).Select(_ => _store.BeginUnitOfWork()).ToList();
        var streams = units.Select(_ => TestEvents.NewStream()).ToList();
        for (var i = 0; i < units.Count; i++)
        {
            await _store.AppendAsync(streams[i], ExpectedVersion.NoStream, [TestEvents.New()], units[i]);
            await _outbox.AddAsync([NewRow()], units[i]);
        }

        await Task.WhenAll(units.Select((u, i) => Task.Run(async () =>
        {
            await _store.AppendAsync(TestEvents.NewStream(), ExpectedVersion.NoStream, [TestEvents.New()]);
            await (i % 2 == 0 ? u.CommitAsync() : u.RollbackAsync());
        })));

        for (var i = 0; i < units.Count; i++)
        {
            Assert.Equal(i % 2 == 0 ? 1 : 0, await _store.GetStreamVersionAsync(streams[i]));
        }

        Assert.Equal(units.Count / 2, await _outbox.CountPendingAsync());
    }

    private static OutboxMessage NewRow() => new()
    {
        Id = Guid.CreateVersion7(),
        DestinationKind = OutboxDestinationKind.Queue,
        Destination = "downstream",
        Envelope = TestEnvelopes.Create(),
        CreatedAt = DateTimeOffset.UtcNow,
    };

    private Task<long> CountAsync(string table) => PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{_schema}\".{table}");
}
