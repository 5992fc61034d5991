using Herald.Conformance;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Internal;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Tests;

/// <summary>
/// How the store's writes meet the file: the write-ahead log shrinks back after a burst, and a write waiting for another
/// connection's write lock, or for an open append of this process, honours its cancellation (review of the SQLite store,
/// items "journal_size_limit" and "busy wait").
/// </summary>
public sealed class SqliteWriteLockAndWalTests : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private static readonly TimeSpan LongBusyTimeout = TimeSpan.FromSeconds(60);

    // How soon a cancelled write must be let go: far below the hold it waits for, which ends only when the test ends it.
    private static readonly TimeSpan CancelDeadline = TimeSpan.FromSeconds(2);
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    [Fact]
    public async Task AfterALargeWriteAndACheckpoint_TheWalShrinksToTheJournalSizeLimit()
    {
        await using var store = await SqliteEventStore.OpenAsync(_database.Path, o => o.MaxEventBytes = 4 * 1024 * 1024);
        Envelope[] burst = [.. Enumerable.Range(0, 6).Select(_ => NewEvent(new byte[4 * 1024 * 1024 - 4096]))];
        await store.AppendAsync("burst-1", ExpectedVersion.NoStream, burst);
        var wal = new FileInfo(_database.Path + "-wal");
        Assert.True(wal.Length > 20L * 1024 * 1024, $"The burst left a WAL of only {wal.Length} bytes.");

        using (var outside = _database.OpenRaw())
        using (var checkpoint = outside.CreateCommand())
        {
            checkpoint.CommandText = "PRAGMA wal_checkpoint(PASSIVE)";
            checkpoint.ExecuteNonQuery();
        }

        // The next commit starts the log over from its beginning, and cuts the file down to the limit.
        await store.AppendAsync("small-1", ExpectedVersion.NoStream, [NewEvent(new byte[16])]);

        wal.Refresh();
        Assert.True(wal.Length <= SqliteConnections.JournalSizeLimit, $"The WAL is still {wal.Length} bytes after the checkpoint.");
    }

    [Fact]
    public async Task AnAppend_WaitingForAnotherConnectionsWriteLock_IsCancelledAtOnce_AndWritesNothing()
    {
        await using var store = await SqliteEventStore.OpenAsync(_database.Path, o => o.BusyTimeout = LongBusyTimeout);
        using var holder = _database.OpenRaw();
        Execute(holder, "BEGIN IMMEDIATE");

        using var cancellation = new CancellationTokenSource();
        var cancelled = store.AppendAsync("order-1", ExpectedVersion.Any, [NewEvent(new byte[16])], cancellation.Token).AsTask();
        var waiting = store.AppendAsync("order-2", ExpectedVersion.Any, [NewEvent(new byte[16])]).AsTask();

        // The writer has taken the group and waits in BEGIN IMMEDIATE for the lock the other connection holds.
        await Eventually.UntilAsync(() => store.WriterStatistics.Transactions >= 1, "the store's writer has run a transaction", Deadline);
        var started = TimeProvider.System.GetTimestamp();
        await cancellation.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.WaitAsync(Deadline));
        Assert.True(TimeProvider.System.GetElapsedTime(started) < LongBusyTimeout / 4, "The cancellation waited for the busy timeout.");
        Assert.False(waiting.IsCompleted);

        // A write not cancelled keeps waiting for the lock as before, and runs once it is free.
        Execute(holder, "ROLLBACK");
        await waiting.WaitAsync(Deadline);
        Assert.Equal(0L, await store.GetStreamVersionAsync("order-1"));
        Assert.Equal(1L, await store.GetStreamVersionAsync("order-2"));
    }

    [Fact]
    public async Task AnOpenAppend_WaitingForAnotherConnectionsWriteLock_IsCancelledAtOnce()
    {
        await using var store = await SqliteEventStore.OpenAsync(_database.Path, o => o.BusyTimeout = LongBusyTimeout);
        using var holder = _database.OpenRaw();
        Execute(holder, "BEGIN IMMEDIATE");

        using var cancellation = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        var started = TimeProvider.System.GetTimestamp();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            () => store.BeginOpenAppendAsync("order-1", ExpectedVersion.Any, [NewEvent(new byte[16])], cancellation.Token).WaitAsync(Deadline));
        Assert.True(TimeProvider.System.GetElapsedTime(started) < LongBusyTimeout / 4, "The cancellation waited for the busy timeout.");

        // The store's own writer is not left holding anything.
        Execute(holder, "ROLLBACK");
        await store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent(new byte[16])]).AsTask().WaitAsync(Deadline);
    }

    [Fact]
    public async Task Writes_WaitingForThisProcesssOpenAppend_AreCancelledAtOnce_AndTheOthersStillRun()
    {
        await using var store = await SqliteEventStore.OpenAsync(_database.Path, o => o.BusyTimeout = LongBusyTimeout);
        // Disposed before the store even when an assertion fails, so the store's writer is not left waiting for it.
        await using var hold = await store.BeginOpenAppendAsync("order-held", ExpectedVersion.NoStream, [NewEvent(new byte[16])]);
        var lockWaits = store.WriterLockWaits;

        // The first write is taken as a group that waits for the open append's write lock; the later ones wait in the queue
        // behind it. Only some are cancelled.
        using var first = new CancellationTokenSource();
        using var later = new CancellationTokenSource();
        var inGroup = store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent(new byte[16])], first.Token).AsTask();
        await Eventually.UntilAsync(() => store.WriterLockWaits > lockWaits, "the writer has taken the first write and waits for the lock", Deadline);
        var waiting = store.AppendAsync("order-2", ExpectedVersion.NoStream, [NewEvent(new byte[16])]).AsTask();
        var queued = store.AppendAsync("order-3", ExpectedVersion.NoStream, [NewEvent(new byte[16])], later.Token).AsTask();
        await first.CancelAsync();
        await later.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => inGroup.WaitAsync(CancelDeadline));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => queued.WaitAsync(CancelDeadline));
        Assert.False(waiting.IsCompleted, "a write went through while the open append held the write lock");

        // The write not cancelled runs once the open append ends, and the store goes on writing; the cancelled ones wrote nothing.
        await hold.CommitAsync();
        Assert.Equal(1, (await waiting.WaitAsync(Deadline)).StreamVersion);
        Assert.Equal(1, (await store.AppendAsync("order-4", ExpectedVersion.NoStream, [NewEvent(new byte[16])]).AsTask().WaitAsync(Deadline)).StreamVersion);
        Assert.Equal(0L, await store.GetStreamVersionAsync("order-1"));
        Assert.Equal(0L, await store.GetStreamVersionAsync("order-3"));
        Assert.Equal(1L, await store.GetStreamVersionAsync("order-held"));
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private static Envelope NewEvent(byte[] body) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "order-happened",
        Time = DateTimeOffset.UnixEpoch,
        Body = body,
    };
}
