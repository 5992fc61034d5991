using Herald.EventSourcing;
using Herald.Postgres.EventSourcing;
using Herald.Conformance;
using Npgsql;

namespace Herald.Postgres.Tests.EventSourcing;

/// <summary>Grouped commits: members share one transaction, yet each keeps its own checks and its own outcome.</summary>
public sealed class AppendCoordinatorTests(PostgresSchemaFixture fixture) : IClassFixture<PostgresSchemaFixture>
{
    // Within MaxEventBytes (512 MiB at most), yet three of them are more than PostgreSQL takes in one statement (1 GB).
    private const int LargeEventBytes = 360 * 1024 * 1024;

    [Fact]
    public async Task QueuedAppends_CommitTogether_AndAConflictingMemberFailsAlone()
    {
        await using var store = await CreateStoreAsync();
        var existing = TestEvents.NewStream();
        await store.AppendAsync(existing, ExpectedVersion.NoStream, TestEvents.Many(1));
        await using var blocked = await HoldTheWriterAsync(store);

        // Queued while the only writer waits: they are taken as one group when it is free again.
        var fine = Enumerable.Range(0, 30).Select(_ => (Stream: TestEvents.NewStream(), Events: TestEvents.Many(2))).ToList();
        var appends = fine.Select(f => store.AppendAsync(f.Stream, ExpectedVersion.NoStream, f.Events).AsTask()).ToList();
        var conflicting = store.AppendAsync(existing, ExpectedVersion.NoStream, TestEvents.Many(1)).AsTask();
        var sameStreamTwice = new[] { store.AppendAsync(fine[0].Stream, ExpectedVersion.Exactly(2), TestEvents.Many(1)).AsTask(), store.AppendAsync(fine[0].Stream, ExpectedVersion.Any, TestEvents.Many(1)).AsTask() };
        await blocked.ReleaseAsync();

        var results = await Task.WhenAll(appends);
        var conflict = await Assert.ThrowsAsync<ConcurrencyException>(() => conflicting);
        var twice = await Task.WhenAll(sameStreamTwice);

        Assert.Equal(1, conflict.Actual);
        Assert.Single(results.Concat(twice).Select(r => r.LastPosition >> 20).Distinct());
        Assert.All(results, r => Assert.Equal(2, r.StreamVersion));
        Assert.Equal([3L, 4L], twice.Select(r => r.StreamVersion));
        Assert.Equal(results.Length + twice.Length, results.Concat(twice).Select(r => r.LastPosition).Distinct().Count());
        Assert.Equal(4, (await TestEvents.ReadStreamAsync(store, fine[0].Stream)).Count);
        Assert.Equal(1, await store.GetStreamVersionAsync(existing));
    }

    [Fact]
    public async Task AGroupWithAnInvalidMember_RunsItsMembersOneByOne_AndOnlyThatMemberFails()
    {
        await using var store = await CreateStoreAsync();
        var refusedType = await RefusedByTheServerAsync();
        await using var blocked = await HoldTheWriterAsync(store);

        var fine = Enumerable.Range(0, 10).Select(_ => (Stream: TestEvents.NewStream(), Events: TestEvents.Many(1))).ToList();
        var appends = fine.Select(f => store.AppendAsync(f.Stream, ExpectedVersion.NoStream, f.Events).AsTask()).ToList();
        var invalid = store.AppendAsync(TestEvents.NewStream(), ExpectedVersion.NoStream, [TestEvents.New(refusedType)]).AsTask();
        await blocked.ReleaseAsync();

        var results = await Task.WhenAll(appends);
        await Assert.ThrowsAnyAsync<NpgsqlException>(() => invalid);
        Assert.All(results, r => Assert.Equal(1, r.StreamVersion));
        foreach (var (stream, events) in fine)
        {
            Assert.Equal(events.Select(e => e.MessageId), (await TestEvents.ReadStreamAsync(store, stream)).Select(e => e.EventId));
        }
    }

    [Theory]
    [InlineData("U+0000")]
    [InlineData("half of a surrogate pair")]
    public async Task AnAppendWhoseEnvelopeHoldsTextPostgreSqlCannotStore_IsRefusedBeforeItJoinsAGroup_AndTheOthersCommitTogether(string held)
    {
        // Made here: test data travels as UTF-8, which would turn half of a surrogate pair into U+FFFD.
        var (correlationId, named) = held == "U+0000" ? ("order-1\0", "order-1\\u0000") : ("order-1\uD83D", "order-1?");
        // PostgreSQL's text cannot hold U+0000: the member failed with a bare 22021 naming nothing, and its group rolled back.
        // Nor can UTF-8 hold half of a surrogate pair: Npgsql threw while writing the group's batch, which failed every member
        // of the group with a bare EncoderFallbackException and broke the writer's connection.
        await using var store = await CreateStoreAsync();
        await using var blocked = await HoldTheWriterAsync(store);

        var fine = Enumerable.Range(0, 10).Select(_ => (Stream: TestEvents.NewStream(), Events: TestEvents.Many(1))).ToList();
        var appends = fine.Select(f => store.AppendAsync(f.Stream, ExpectedVersion.NoStream, f.Events).AsTask()).ToList();
        var stream = TestEvents.NewStream();
        var bad = TestEvents.New() with { CorrelationId = correlationId };
        var invalid = store.AppendAsync(stream, ExpectedVersion.NoStream, [bad]).AsTask();
        await blocked.ReleaseAsync();

        var refused = await Assert.ThrowsAsync<ArgumentException>(() => invalid);
        var results = await Task.WhenAll(appends);
        Assert.Equal("events", refused.ParamName);
        Assert.Contains($"correlation id '{named}' of event {bad.MessageId} of the append to '{stream}'", refused.Message, StringComparison.Ordinal);
        Assert.Single(results.Select(r => r.LastPosition >> 20).Distinct());
        Assert.Equal(0, await store.GetStreamVersionAsync(stream));
    }

    [Fact]
    public async Task AMemberWhoseEventsAreStored_LeavesItsStreamAsItWas_WhileTheOthersInItsGroupCommit()
    {
        await using var store = await CreateStoreAsync();
        var retried = TestEvents.NewStream();
        var events = TestEvents.Many(2);
        var original = await store.AppendAsync(retried, ExpectedVersion.NoStream, events);
        var clashing = TestEvents.NewStream();
        var stored = TestEvents.Many(1);
        var clashingOriginal = await store.AppendAsync(clashing, ExpectedVersion.NoStream, stored);
        await using var blocked = await HoldTheWriterAsync(store);

        // One group: the append function moves both existing streams on before it finds their event ids stored.
        var retry = store.AppendAsync(retried, ExpectedVersion.Any, events).AsTask();
        var clash = store.AppendAsync(clashing, ExpectedVersion.Any, [stored[0] with { Body = "{\"n\":-1}"u8.ToArray() }]).AsTask();
        var fresh = TestEvents.NewStream();
        var other = store.AppendAsync(fresh, ExpectedVersion.NoStream, TestEvents.Many(1)).AsTask();
        await blocked.ReleaseAsync();

        Assert.Equal(original, await retry);
        await Assert.ThrowsAsync<ConcurrencyException>(() => clash);
        Assert.Equal(1, (await other).StreamVersion);
        Assert.Equal(original, await store.AppendAsync(retried, ExpectedVersion.Exactly(2), []));
        Assert.Equal(clashingOriginal, await store.AppendAsync(clashing, ExpectedVersion.Exactly(1), []));
        Assert.Equal(3, (await store.AppendAsync(retried, ExpectedVersion.Exactly(2), TestEvents.Many(1))).StreamVersion);
        Assert.Equal(3, (await TestEvents.ReadStreamAsync(store, retried)).Count);
    }

    [Fact]
    public async Task AGroupOfExistingStreamsWithARetriedMember_LeavesThatStreamAsItWas_WhileTheOthersCommit()
    {
        // Migration 11: every member's stream moves, so the group writes in one statement unless its probe finds a stored
        // id; this one does, writes nothing there, and goes on as migration 9 did.
        await using var store = await CreateStoreAsync();
        var retried = TestEvents.NewStream();
        var events = TestEvents.Many(2);
        var original = await store.AppendAsync(retried, ExpectedVersion.NoStream, events);
        var continued = TestEvents.NewStream();
        await store.AppendAsync(continued, ExpectedVersion.NoStream, TestEvents.Many(1));
        await using var blocked = await HoldTheWriterAsync(store);

        var retry = store.AppendAsync(retried, ExpectedVersion.Any, events).AsTask();
        var next = store.AppendAsync(continued, ExpectedVersion.Exactly(1), TestEvents.Many(2)).AsTask();
        await blocked.ReleaseAsync();

        Assert.Equal(original, await retry);
        var appended = await next;
        Assert.Equal(3, appended.StreamVersion);
        Assert.Equal(original, await store.AppendAsync(retried, ExpectedVersion.Exactly(2), []));
        Assert.Equal(appended, await store.AppendAsync(continued, ExpectedVersion.Exactly(3), []));
        Assert.Equal(3, (await store.AppendAsync(retried, ExpectedVersion.Exactly(2), TestEvents.Many(1))).StreamVersion);
        Assert.Equal(3, (await TestEvents.ReadStreamAsync(store, retried)).Count);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ARetry_GroupedAfterAnAppendOfItsEventIdsToAnotherStream_IsStillRecognisedAsARetry(bool any)
    {
        // The probe matched a stored id to the first member carrying it in the call: a retry behind another member with the
        // same id (to another stream, where it is new) found no hit of its own, so with Any it wrote its events a second
        // time, and with NoStream it failed as a conflict.
        await using var store = await CreateStoreAsync();
        var expected = any ? ExpectedVersion.Any : ExpectedVersion.NoStream;
        var retried = TestEvents.NewStream();
        var events = TestEvents.Many(1);
        var original = await store.AppendAsync(retried, expected, events);
        await using var blocked = await HoldTheWriterAsync(store);

        // One group, one round: the other stream's member comes first.
        var elsewhere = store.AppendAsync(TestEvents.NewStream(), ExpectedVersion.NoStream, events).AsTask();
        var retry = store.AppendAsync(retried, expected, events).AsTask();
        await blocked.ReleaseAsync();

        Assert.Equal(1, (await elsewhere).StreamVersion);
        Assert.Equal(original, await retry);
        Assert.Single(await TestEvents.ReadStreamAsync(store, retried));
    }

    [Fact]
    public async Task AppendsOfLargeEvents_EachWithinTheLimit_CommitWhenGroupedPastWhatOneStatementCarries()
    {
        // PostgreSQL takes at most 1 GB in one protocol message: three 360 MiB events in one group's call broke the writer's
        // connection and failed every member, though each alone is well within MaxEventBytes.
        await using var store = await CreateStoreAsync(LargeEventBytes);
        var body = new byte[LargeEventBytes];
        await using var blocked = await HoldTheWriterAsync(store);

        var streams = Enumerable.Range(0, 3).Select(_ => TestEvents.NewStream()).ToList();
        var appends = streams.Select(s => store.AppendAsync(s, ExpectedVersion.NoStream, [TestEvents.New() with { Body = body }]).AsTask()).ToList();
        await blocked.ReleaseAsync();

        Assert.All(await Task.WhenAll(appends), r => Assert.Equal(1, r.StreamVersion));
        foreach (var stream in streams)
        {
            Assert.Equal(1, await store.GetStreamVersionAsync(stream));
        }
    }

    [Fact]
    public async Task AnAppendTooLargeForOneStatement_IsRefusedBeforeItJoinsAGroup_AndTheOthersCommit()
    {
        // Three 360 MiB events in one append can never be sent in one statement: the server closed the writer's connection and
        // every member of its group failed with a bare I/O error.
        await using var store = await CreateStoreAsync(LargeEventBytes);
        var body = new byte[LargeEventBytes];
        await using var blocked = await HoldTheWriterAsync(store);

        var fine = store.AppendAsync(TestEvents.NewStream(), ExpectedVersion.NoStream, TestEvents.Many(1)).AsTask();
        var stream = TestEvents.NewStream();
        var tooLarge = store.AppendAsync(stream, ExpectedVersion.NoStream, [.. Enumerable.Range(0, 3).Select(_ => TestEvents.New() with { Body = body })]).AsTask();
        await blocked.ReleaseAsync();

        var refused = await Assert.ThrowsAsync<ArgumentException>(() => tooLarge);
        Assert.Equal("events", refused.ParamName);
        Assert.Equal(1, (await fine).StreamVersion);
        Assert.Equal(0, await store.GetStreamVersionAsync(stream));
    }

    [Fact]
    public async Task AnEventIdStoredInAnotherStream_IsAppendedAgain_AsMigration9Did()
    {
        // An id counts as stored only in its member's own stream. Migration 11's one-statement write gives way to any stored
        // id, and the path it falls to still appends this one.
        await using var store = await CreateStoreAsync();
        var first = TestEvents.NewStream();
        var second = TestEvents.NewStream();
        var shared = TestEvents.Many(1);
        await store.AppendAsync(first, ExpectedVersion.NoStream, shared);
        await store.AppendAsync(second, ExpectedVersion.NoStream, TestEvents.Many(1));

        var result = await store.AppendAsync(second, ExpectedVersion.Exactly(1), shared);

        Assert.Equal(2, result.StreamVersion);
        Assert.Equal(shared[0].MessageId, (await TestEvents.ReadStreamAsync(store, second))[1].EventId);
        Assert.Equal(result, await store.AppendAsync(second, ExpectedVersion.Exactly(2), []));
    }

    // A message type the events table's trigger refuses, so that member, and the group holding it, fails on the server.
    // Created before the writer is held: the trigger takes a lock the held append's transaction would block.
    private async Task<string> RefusedByTheServerAsync()
    {
        var refused = "refused-by-a-trigger-" + Guid.NewGuid().ToString("N");
        await using var connection = await fixture.DataSource.OpenConnectionAsync();
        await using var command = new NpgsqlCommand(
            $"""
            CREATE OR REPLACE FUNCTION {fixture.Schema}.refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.type = '{refused}' THEN RAISE EXCEPTION 'refused by the test'; END IF;
                RETURN NEW;
            END $$;
            DROP TRIGGER IF EXISTS refuse_marked ON {fixture.Schema}.events;
            CREATE TRIGGER refuse_marked BEFORE INSERT ON {fixture.Schema}.events FOR EACH ROW EXECUTE FUNCTION {fixture.Schema}.refuse_marked();
            """,
            connection);
        await command.ExecuteNonQueryAsync();
        return refused;
    }

    private Task<PostgresEventStore> CreateStoreAsync(int maxEventBytes = AppendValidation.DefaultMaxEventBytes) =>
        PostgresEventStore.CreateAsync(fixture.DataSource, new PostgresStoreOptions { Schema = fixture.Schema, AppendWriters = 1, MaxEventBytes = maxEventBytes });

    // Keeps the store's only writer loop busy: it waits for a row lock another transaction holds, until released.
    private static async Task<HeldWriter> HoldTheWriterAsync(PostgresEventStore store)
    {
        var stream = TestEvents.NewStream();
        var holder = await HeldAppend.BeginAsync(store, stream, ExpectedVersion.NoStream, TestEvents.Many(1));
        var waiting = store.AppendAsync(stream, ExpectedVersion.Any, TestEvents.Many(1)).AsTask();
        await WaitUntilAsync(async () => await LockWaitersAsync(holder.ProcessId) > 0, "the writer loop to wait for the held row lock");
        return new HeldWriter(holder, waiting);
    }

    private static async Task<long> LockWaitersAsync(int holderProcessId)
    {
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))", connection);
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = holderProcessId });
        return (long)(await command.ExecuteScalarAsync())!;
    }

    private static Task WaitUntilAsync(Func<Task<bool>> condition, string what) =>
        Eventually.UntilAsync(async () => await condition(), what);

    private sealed class HeldWriter(HeldAppend holder, Task<AppendResult> waiting) : IAsyncDisposable
    {
        public async Task ReleaseAsync()
        {
            await holder.CommitAsync();
            Assert.Equal(2, (await waiting).StreamVersion);
        }

        public ValueTask DisposeAsync() => holder.DisposeAsync();
    }
}
