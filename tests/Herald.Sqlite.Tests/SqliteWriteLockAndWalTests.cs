using Herald.Conformance;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Internal;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Tests;

/// <summary>
/// How the store's writes meet the file: the write-ahead log shrinks back after a burst, and a write waiting for another
/// connection's write lock honours its cancellation (review of the SQLite store, items "journal_size_limit" and "busy wait").
/// </summary>
public sealed class SqliteWriteLockAndWalTests : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private static readonly TimeSpan LongBusyTimeout = TimeSpan.FromSeconds(60);
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
