using Herald.Conformance;
using Herald.Conformance.Reliability;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Outbox;
using Microsoft.Extensions.Time.Testing;
using Npgsql;

namespace Herald.Postgres.Tests.Reliability;

/// <summary>
/// The sweeps of expired inbox marks and idempotency keys, the outbox cleanup of sent rows and the dead letters' bulk delete, delete through a subquery of
/// matching rows. A row that a concurrent transaction changes while the delete waits on it may match no more once that
/// transaction commits: the delete must leave it (in READ COMMITTED only the outer WHERE is checked again against the
/// row's new version).
/// </summary>
public sealed class PostgresSweepRaceTests : IAsyncLifetime
{
    private readonly string _schema = PostgresTestDatabase.NewSchema();
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2030, 1, 2, 3, 0, 0, TimeSpan.Zero));
    private PostgresEventStore _store = null!;

    public async Task InitializeAsync()
    {
        _store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = _schema });
    }

    public async Task DisposeAsync()
    {
        await _store.DisposeAsync();
        await PostgresTestDatabase.DropSchemaAsync(_schema);
    }

    [Fact]
    public async Task InboxCleanup_WaitingOnAnExpiredMarkThatARedeliveryMarksAgain_LeavesTheNewMark()
    {
        var inbox = new PostgresInbox(_store, _clock);
        var messageId = Guid.CreateVersion7();
        Assert.True(await inbox.TryMarkHandledAsync("orders", messageId, TimeSpan.FromMinutes(1)));
        _clock.Advance(TimeSpan.FromMinutes(2));

        // A redelivery past the window marks the id again; its unit of work holds the row until it commits.
        await using var unitOfWork = _store.BeginUnitOfWork();
        Assert.True(await inbox.TryMarkHandledAsync("orders", messageId, TimeSpan.FromMinutes(10), unitOfWork));
        var cleanup = inbox.DeleteExpiredAsync(100).AsTask();
        await WaitUntilBlockedAsync("inbox", cleanup);
        await unitOfWork.CommitAsync();
        await cleanup.WaitAsync(TimeSpan.FromSeconds(10));

        // The cleanup deleted the mark committed with the handler's writes: a redelivery after a crash before the ack ran again.
        Assert.True(await inbox.IsHandledAsync("orders", messageId), "the mark committed with the redelivery's writes is kept");
        Assert.False(await inbox.TryMarkHandledAsync("orders", messageId, TimeSpan.FromMinutes(10)));
    }

    [Fact]
    public async Task IdempotencySweep_WaitingOnAnExpiredKeyThatACallerTakesAgain_LeavesTheNewLock()
    {
        var store = new PostgresIdempotencyStore(_store, _clock);
        var old = await store.TryAcquireAsync("charge-1", TimeSpan.FromSeconds(30));
        Assert.True(await store.CompleteAsync("charge-1", old.LockToken, "1"u8.ToArray(), TimeSpan.FromMinutes(1)));
        _clock.Advance(TimeSpan.FromMinutes(2));

        // Every 1024th acquire sweeps first: after the one above, 1022 go by on keys of their own.
        for (var i = 1; i < 1023; i++)
        {
            await store.TryAcquireAsync($"other-{i}", TimeSpan.FromSeconds(30));
        }

        // Another node takes the expired key (the store's take, on its own connection), its transaction still open.
        var token = Guid.NewGuid();
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        await using (var take = new NpgsqlCommand(
            $"UPDATE \"{_schema}\".idempotency SET lock_token = $1, completed = false, result = NULL, expires_at = $2 WHERE idempotency_key = 'charge-1'",
            connection,
            transaction))
        {
            take.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = token });
            take.Parameters.Add(new NpgsqlParameter<DateTimeOffset> { TypedValue = _clock.GetUtcNow() + TimeSpan.FromSeconds(30) });
            Assert.Equal(1, await take.ExecuteNonQueryAsync());
        }

        var sweeping = store.TryAcquireAsync("other-1023", TimeSpan.FromSeconds(30)).AsTask();
        await WaitUntilBlockedAsync("idempotency", sweeping);
        await transaction.CommitAsync();
        await sweeping.WaitAsync(TimeSpan.FromSeconds(10));

        // The sweep deleted the new holder's lock: a third caller took the key and ran the operation beside it, and the
        // holder's result was refused.
        Assert.Equal(Herald.Reliability.Idempotency.IdempotencyAcquireStatus.Locked, (await store.TryAcquireAsync("charge-1", TimeSpan.FromSeconds(30))).Status);
        Assert.True(await store.CompleteAsync("charge-1", token, "2"u8.ToArray(), TimeSpan.FromMinutes(1)), "the new holder stores its result");
    }

    [Fact]
    public async Task DeadLetterPurge_WaitingOnADeadLetterMovedToAnotherEndpoint_LeavesIt()
    {
        var deadLetters = new PostgresDeadLetterStore(_store);
        var moved = DeadLetterStoreConformance.NewDeadLetter("orders");
        Assert.True(await deadLetters.AddAsync(moved));

        // An operator's statement moves it to another endpoint (the counts' triggers follow such a move), still open.
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        await using (var move = new NpgsqlCommand($"UPDATE \"{_schema}\".dead_letters SET endpoint = 'orders-kept' WHERE id = $1", connection, transaction))
        {
            move.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = moved.Id });
            Assert.Equal(1, await move.ExecuteNonQueryAsync());
        }

        var purge = deadLetters.DeleteManyAsync(new DeadLetterQuery { Endpoint = "orders" }).AsTask();
        await WaitUntilBlockedAsync("dead_letters", purge);
        await transaction.CommitAsync();

        // The purge of "orders" deleted the dead letter of "orders-kept" it had waited on.
        Assert.Equal(0, await purge.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal("orders-kept", (await deadLetters.GetAsync(moved.Id))?.Endpoint);
    }

    [Fact]
    public async Task OutboxCleanup_WaitingOnASentRowThatAnOperatorMarksUnsent_LeavesItForTheRelay()
    {
        var outbox = new PostgresOutboxStore(_store);
        var resent = new OutboxMessage
        {
            Id = Guid.CreateVersion7(),
            DestinationKind = OutboxDestinationKind.Queue,
            Destination = "orders",
            Envelope = TestEnvelopes.Create() with { DeliveryAttempt = 0 },
            CreatedAt = _clock.GetUtcNow(),
        };
        await outbox.AddAsync([resent]);
        await outbox.MarkSentAsync([resent.Id], _clock.GetUtcNow());

        // An operator clears sent_at to send the row again, the transaction still open.
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        await using (var clear = new NpgsqlCommand($"UPDATE \"{_schema}\".outbox SET sent_at = NULL WHERE id = $1", connection, transaction))
        {
            clear.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = resent.Id });
            Assert.Equal(1, await clear.ExecuteNonQueryAsync());
        }

        var cleanup = outbox.DeleteSentAsync(_clock.GetUtcNow().AddDays(1), 100).AsTask();
        await WaitUntilBlockedAsync("outbox", cleanup);
        await transaction.CommitAsync();

        // The cleanup deleted the row it had waited on, unsent now: the message the operator asked for never left.
        Assert.Equal(0, await cleanup.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Contains(resent.Id, (await outbox.FetchPendingAsync(100)).Select(m => m.Id));
    }

    private async Task WaitUntilBlockedAsync(string table, Task sweep) =>
        await Eventually.UntilAsync(
            async () => sweep.IsCompleted || await PostgresTestDatabase.ScalarAsync<long>(
                $"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM \"{_schema}\".{table}%'") > 0,
            "the sweep waits on the row the other transaction holds");
}
