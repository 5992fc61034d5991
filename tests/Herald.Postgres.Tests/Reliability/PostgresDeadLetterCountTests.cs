using Herald.Conformance;
using Herald.Conformance.Reliability;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Reliability;
using Herald.Reliability.DeadLetters;
using Npgsql;

namespace Herald.Postgres.Tests.Reliability;

/// <summary>
/// Issue 16: the per-endpoint dead-letter counts that migration 10's triggers keep, so counting does not read every row. They
/// must agree with the rows whoever writes them: the store, a bulk statement, a rolled-back transaction, a truncate, an
/// upgrade of a schema that already holds dead letters.
/// </summary>
public sealed class PostgresDeadLetterCountTests
{
    [Fact]
    public async Task Counts_AgreeWithTheRows_AfterBulkStatementsARollbackAndATruncate()
    {
        await using var schema = new TemporarySchema();
        await using var store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = schema.Name });
        var deadLetters = new PostgresDeadLetterStore(store);
        var s = $"\"{schema.Name}\"";

        await PostgresTestDatabase.ExecuteAsync(Insert(s, 1000, "ep-' || (g % 4) || '"));
        await PostgresTestDatabase.ExecuteAsync($"DELETE FROM {s}.dead_letters WHERE endpoint = 'ep-1' AND attempt_count % 8 = 1");
        await PostgresTestDatabase.ExecuteAsync($"UPDATE {s}.dead_letters SET endpoint = 'ep-moved' WHERE endpoint = 'ep-2' AND attempt_count < 10");
        await PostgresTestDatabase.ExecuteAsync($"BEGIN; {Insert(s, 50, "ep-0")}; DELETE FROM {s}.dead_letters WHERE endpoint = 'ep-3'; ROLLBACK;");
        await AssertCountsMatchRowsAsync(s, deadLetters, ["ep-0", "ep-1", "ep-2", "ep-3", "ep-moved", "ep-none"]);
        Assert.Equal(250, await deadLetters.CountAsync(new DeadLetterQuery { Endpoint = "ep-0" }));
        Assert.Equal(125, await deadLetters.CountAsync(new DeadLetterQuery { Endpoint = "ep-1" }));

        await PostgresTestDatabase.ExecuteAsync($"TRUNCATE {s}.dead_letters");
        Assert.Equal(0, await deadLetters.CountAsync(DeadLetterQuery.All));
        await deadLetters.AddAsync(DeadLetterStoreConformance.NewDeadLetter("ep-0"));
        await AssertCountsMatchRowsAsync(s, deadLetters, ["ep-0", "ep-1"]);
    }

    [Fact]
    public async Task Start_OnASchemaAtVersion9_CountsTheDeadLettersItHolds()
    {
        await using var schema = new TemporarySchema();
        var options = new PostgresStoreOptions { Schema = schema.Name };
        var s = $"\"{schema.Name}\"";
        await (await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options)).DisposeAsync();

        // Back to version 9 (no counts), then dead letters written as that version wrote them.
        await PostgresTestDatabase.ExecuteAsync($"""
            DROP TABLE {s}.dead_letter_counts;
            DROP FUNCTION {s}.dead_letters_counted CASCADE;
            DELETE FROM {s}.schema_version WHERE version = 10;
            {Insert(s, 300, "ep-' || (g % 3) || '")};
            """);
        await using var store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options);
        var deadLetters = new PostgresDeadLetterStore(store);

        Assert.Equal(100, await deadLetters.CountAsync(new DeadLetterQuery { Endpoint = "ep-2" }));
        Assert.Equal(300, await deadLetters.CountAsync(DeadLetterQuery.All));
        await deadLetters.AddAsync(DeadLetterStoreConformance.NewDeadLetter("ep-2"));
        await AssertCountsMatchRowsAsync(s, deadLetters, ["ep-0", "ep-1", "ep-2"]);
    }

    [Fact]
    public async Task TwoSessionsDeadLetteringOneEndpoint_DoNotWaitForEachOthersCommit()
    {
        await using var schema = new TemporarySchema();
        await using var store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = schema.Name });
        var deadLetters = new PostgresDeadLetterStore(store);
        var s = $"\"{schema.Name}\"";
        var unpooled = new NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString) { Pooling = false }.ConnectionString;

        // The counts are spread over slots by backend pid; two sessions in different slots must not queue on one row lock.
        await using var first = new NpgsqlConnection(unpooled);
        await first.OpenAsync();
        var others = new List<NpgsqlConnection>();
        try
        {
            NpgsqlConnection second;
            do
            {
                second = new NpgsqlConnection(unpooled);
                await second.OpenAsync();
                others.Add(second);
            }
            while (second.ProcessID % 16 == first.ProcessID % 16);

            await using var open = await first.BeginTransactionAsync();
            await using (var insert = new NpgsqlCommand(Insert(s, 10, "ep-hot"), first, open))
            {
                await insert.ExecuteNonQueryAsync();
            }

            await using (var insert = new NpgsqlCommand($"SET statement_timeout = '5s'; {Insert(s, 10, "ep-hot")}", second))
            {
                await insert.ExecuteNonQueryAsync();
            }

            Assert.Equal(10, await deadLetters.CountAsync(new DeadLetterQuery { Endpoint = "ep-hot" }));
            await open.CommitAsync();
            Assert.Equal(20, await deadLetters.CountAsync(new DeadLetterQuery { Endpoint = "ep-hot" }));
        }
        finally
        {
            foreach (var connection in others)
            {
                await connection.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Purge_WhileAnotherSessionDeletesItsFirstBatch_StillDeletesEveryMatchingDeadLetter()
    {
        await using var schema = new TemporarySchema();
        await using var store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = schema.Name });
        var deadLetters = new PostgresDeadLetterStore(store);
        var s = $"\"{schema.Name}\"";
        await PostgresTestDatabase.ExecuteAsync(Insert(s, 250, "ep-purged"));
        var manager = new DeadLetterManager(deadLetters, new Herald.Transport.InMemory.InMemoryTransport(), TimeProvider.System);

        // Another session (a second operator, the retention trim) deletes the batch the purge takes first and commits only
        // once the purge waits on its locks: the purge's first batch then deletes nothing, though 150 more match.
        await using var other = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await other.OpenAsync();
        await using var open = await other.BeginTransactionAsync();
        await using (var delete = new NpgsqlCommand(
            $"DELETE FROM {s}.dead_letters WHERE id IN (SELECT id FROM {s}.dead_letters WHERE endpoint = 'ep-purged' ORDER BY id LIMIT 100)", other, open))
        {
            Assert.Equal(100, await delete.ExecuteNonQueryAsync());
        }

        var purge = manager.PurgeAsync(new DeadLetterQuery { Endpoint = "ep-purged" }).AsTask();
        await Eventually.UntilAsync(
            async () => await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%{schema.Name}%'") > 0 || purge.IsCompleted,
            "the purge waits for the other session's locks");
        await open.CommitAsync();

        Assert.Equal(150, await purge);
        Assert.Equal(0, await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM {s}.dead_letters WHERE endpoint = 'ep-purged'"));
    }

    private static string Insert(string schema, int rows, string endpoint) => $"""
        INSERT INTO {schema}.dead_letters (id, endpoint, cause, error_type, error_message, fingerprint, first_failure, last_failure, attempt_count, retry_count,
                                           message_id, message_type, schema_version, time, content_type, body, delivery_attempt)
        SELECT gen_random_uuid(), '{endpoint}', 'RetriesExhausted', 'E', 'm', 'f', now(), now(), g, 0,
               gen_random_uuid(), 't', 1, now(), 'application/json', '\x7b7d', 1
          FROM generate_series(1, {rows}) g
        """;

    private static async Task AssertCountsMatchRowsAsync(string schema, PostgresDeadLetterStore store, string[] endpoints)
    {
        foreach (var endpoint in endpoints)
        {
            var rows = await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM {schema}.dead_letters WHERE endpoint = '{endpoint}'");
            Assert.Equal(rows, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint }));
        }

        Assert.Equal(await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM {schema}.dead_letters"), await store.CountAsync(DeadLetterQuery.All));
    }
}
