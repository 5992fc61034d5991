using Herald.Sqlite.EventSourcing;
using System.Text;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Reliability;
using Herald.Reliability.Outbox;
using Herald.Sqlite.Reliability;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Sqlite.Tests.Reliability;

/// <summary>Issue 4: the outbox rows, the inbox mark and an append of one unit of work commit together or not at all.</summary>
public sealed class SqliteUnitOfWorkTests : IAsyncLifetime
{
    private static readonly TimeSpan Window = TimeSpan.FromMinutes(10);
    private readonly TempDatabase _database = new();
    private SqliteEventStore _store = null!;
    private SqliteOutboxStore _outbox = null!;
    private SqliteInbox _inbox = null!;

    public async Task InitializeAsync()
    {
        _store = await SqliteEventStore.OpenAsync(_database.Path);
        _outbox = new SqliteOutboxStore(_store);
        _inbox = new SqliteInbox(_store);
    }

    public async Task DisposeAsync()
    {
        await _store.DisposeAsync();
        _database.Dispose();
    }

    [Fact]
    public async Task Commit_WritesTheAppendTheOutboxRowsAndTheInboxMark_Together()
    {
        var messageId = Guid.CreateVersion7();
        var rows = new[] { NewRow(), NewRow() };
        var committed = 0;
        await using var unitOfWork = _store.BeginUnitOfWork();

        Assert.True(await _inbox.TryMarkHandledAsync("orders", messageId, Window, unitOfWork));
        await _store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()], unitOfWork);
        await _outbox.AddAsync(rows, unitOfWork);
        unitOfWork.OnCommitted(_ =>
        {
            committed++;
            return ValueTask.CompletedTask;
        });

        // Nothing reaches the file before the commit, and a duplicate in this process waits for the unit of work holding
        // the claim, as a row lock makes it wait on PostgreSQL: a duplicate once that commits.
        Assert.Equal(0L, _database.Scalar("SELECT COUNT(*) FROM herald_events"));
        Assert.Equal(0L, await _outbox.CountPendingAsync());
        var duplicate = _inbox.TryMarkHandledAsync("orders", messageId, Window).AsTask();
        Assert.False(duplicate.IsCompleted);

        await unitOfWork.CommitAsync();

        Assert.False(await duplicate.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(1, committed);
        Assert.Equal(1L, _database.Scalar("SELECT COUNT(*) FROM herald_events"));
        Assert.Equal(rows.Select(r => r.Id), (await _outbox.FetchPendingAsync(10)).Select(r => r.Id));
        Assert.True(await _inbox.IsHandledAsync("orders", messageId));
        Assert.False(await _inbox.TryMarkHandledAsync("orders", messageId, Window));
    }

    [Fact]
    public async Task InboxMark_OfAHandlerLongerThanTheWindow_LastsTheWindowFromItsCommit_SoARedeliveryIsADuplicate()
    {
        // The mark reaches the file only at the commit. It used to expire a window after the attempt began, so a handler
        // that ran longer committed an expired mark: the cleanup could delete it at once, and the redelivery of a message
        // whose ack was lost after the commit ran its handler a second time.
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var inbox = new SqliteInbox(_store, clock);
        var messageId = Guid.CreateVersion7();
        await using var unitOfWork = _store.BeginUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync("orders", messageId, Window, unitOfWork));

        // The handler runs past the window.
        clock.Advance(Window + TimeSpan.FromMinutes(1));
        await unitOfWork.CommitAsync();

        Assert.True(await inbox.IsHandledAsync("orders", messageId));
        Assert.Equal(0, await inbox.DeleteExpiredAsync(100));
        Assert.False(await inbox.TryMarkHandledAsync("orders", messageId, Window));

        // A window after the commit the mark has expired.
        clock.Advance(Window);
        Assert.False(await inbox.IsHandledAsync("orders", messageId));
    }

    [Fact]
    public async Task Rollback_WritesNothing_AndFreesTheInboxMark()
    {
        var messageId = Guid.CreateVersion7();
        var rolledBack = 0;
        var unitOfWork = _store.BeginUnitOfWork();
        Assert.True(await _inbox.TryMarkHandledAsync("orders", messageId, Window, unitOfWork));
        await _store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()], unitOfWork);
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
        Assert.Equal(0L, _database.Scalar("SELECT COUNT(*) FROM herald_events"));
        Assert.Equal(0L, await _outbox.CountPendingAsync());
        Assert.True(await _inbox.TryMarkHandledAsync("orders", messageId, Window));
    }

    [Fact]
    public async Task Commit_WhenTheAppendConflicts_FailsAndWritesNeitherTheOutboxRowsNorTheInboxMark()
    {
        await _store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()]);
        var messageId = Guid.CreateVersion7();
        var rolledBack = 0;
        var unitOfWork = _store.BeginUnitOfWork();
        Assert.True(await _inbox.TryMarkHandledAsync("orders", messageId, Window, unitOfWork));
        await _outbox.AddAsync([NewRow()], unitOfWork);
        await _store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()], unitOfWork);
        unitOfWork.OnRolledBack(_ =>
        {
            rolledBack++;
            return ValueTask.CompletedTask;
        });

        await Assert.ThrowsAsync<ConcurrencyException>(() => unitOfWork.CommitAsync().AsTask());

        Assert.Equal(1, rolledBack);
        Assert.Equal(1L, _database.Scalar("SELECT COUNT(*) FROM herald_events"));
        Assert.Equal(0L, await _outbox.CountPendingAsync());
        Assert.False(await _inbox.IsHandledAsync("orders", messageId));
        Assert.True(await _inbox.TryMarkHandledAsync("orders", messageId, Window));
    }

    [Fact]
    public async Task Commit_WhenAnotherProcessMarkedTheMessageMeanwhile_FailsAndWritesNothing()
    {
        var messageId = Guid.CreateVersion7();
        var unitOfWork = _store.BeginUnitOfWork();
        Assert.True(await _inbox.TryMarkHandledAsync("orders", messageId, Window, unitOfWork));
        await _outbox.AddAsync([NewRow()], unitOfWork);

        // A second store on the file stands for another process: it has no view of this one's claims.
        await using (var other = await SqliteEventStore.OpenAsync(_database.Path))
        {
            Assert.True(await new SqliteInbox(other).TryMarkHandledAsync("orders", messageId, Window));
        }

        await Assert.ThrowsAsync<InvalidOperationException>(() => unitOfWork.CommitAsync().AsTask());
        Assert.Equal(0L, await _outbox.CountPendingAsync());
    }

    [Fact]
    public async Task DisposingWithoutCommit_RollsBack()
    {
        var rolledBack = false;
        await using (var unitOfWork = _store.BeginUnitOfWork())
        {
            await _outbox.AddAsync([NewRow()], unitOfWork);
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
    public async Task AUnitOfWorkOfAnotherFile_IsRefused()
    {
        using var otherFile = new TempDatabase();
        await using var other = await SqliteEventStore.OpenAsync(otherFile.Path);
        await using var foreign = other.BeginUnitOfWork();

        await Assert.ThrowsAsync<ArgumentException>(() => _outbox.AddAsync([NewRow()], foreign).AsTask());
        await Assert.ThrowsAsync<ArgumentException>(() => _store.AppendAsync("order-1", ExpectedVersion.Any, [NewEvent()], foreign).AsTask());
    }

    [Fact]
    public async Task ConcurrentUnitsOfWork_CommitIndependently_WithoutDeadlockingOtherWrites()
    {
        var units = Enumerable.Range(0, 32).Select(_ => _store.BeginUnitOfWork()).ToList();
        for (var i = 0; i < units.Count; i++)
        {
            await _store.AppendAsync($"order-{i}", ExpectedVersion.NoStream, [NewEvent()], units[i]);
            await _outbox.AddAsync([NewRow()], units[i]);
        }

        var commits = units.Select((u, i) => Task.Run(async () =>
        {
            await _store.AppendAsync($"plain-{i}", ExpectedVersion.NoStream, [NewEvent()]);
            if (i % 2 == 0)
            {
                await u.CommitAsync();
            }
            else
            {
                await u.RollbackAsync();
            }
        }));
        await Task.WhenAll(commits);

        Assert.Equal(48L, _database.Scalar("SELECT COUNT(*) FROM herald_events"));
        Assert.Equal(16L, await _outbox.CountPendingAsync());
    }

    private static OutboxMessage NewRow() => new()
    {
        Id = Guid.CreateVersion7(),
        DestinationKind = OutboxDestinationKind.Queue,
        Destination = "billing",
        Envelope = NewEvent(),
        CreatedAt = DateTimeOffset.UtcNow,
    };

    private static Envelope NewEvent() => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "order-placed",
        Time = DateTimeOffset.UtcNow,
        Body = Encoding.UTF8.GetBytes("{}"),
    };
}
