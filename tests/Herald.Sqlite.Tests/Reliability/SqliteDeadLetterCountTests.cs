using Herald.Conformance.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Reliability;
using Herald.Sqlite.Schema;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Tests.Reliability;

/// <summary>
/// Issue 16: the per-endpoint dead-letter counts that migration 8's triggers keep, so counting does not read every row. They
/// must agree with the rows whoever writes them: the store, a bulk statement from outside, a rolled-back transaction, an
/// upgrade of a file that already holds dead letters.
/// </summary>
public sealed class SqliteDeadLetterCountTests
{
    [Fact]
    public async Task Counts_AgreeWithTheRows_AfterBulkStatementsFromOutsideAndARollback()
    {
        using var database = new TempDatabase();
        await using var store = await SqliteEventStore.OpenAsync(database.Path);
        var deadLetters = new SqliteDeadLetterStore(store);
        await deadLetters.AddAsync(DeadLetterStoreConformance.NewDeadLetter("ep-0"));

        using (var raw = database.OpenRaw())
        {
            Execute(raw, Insert(1000, "'ep-' || (value % 4)"));
            Execute(raw, "DELETE FROM herald_dead_letters WHERE endpoint = 'ep-1' AND attempt_count % 8 = 1");
            Execute(raw, "UPDATE herald_dead_letters SET endpoint = 'ep-moved' WHERE endpoint = 'ep-2' AND attempt_count < 10");
            Execute(raw, $"BEGIN; {Insert(50, "'ep-0'")}; DELETE FROM herald_dead_letters WHERE endpoint = 'ep-3'; ROLLBACK;");
        }

        await AssertCountsMatchRowsAsync(database, deadLetters, ["ep-0", "ep-1", "ep-2", "ep-3", "ep-moved", "ep-none"]);
        Assert.Equal(251, await deadLetters.CountAsync(new DeadLetterQuery { Endpoint = "ep-0" }));
        Assert.Equal(125, await deadLetters.CountAsync(new DeadLetterQuery { Endpoint = "ep-1" }));

        using (var raw = database.OpenRaw())
        {
            Execute(raw, "DELETE FROM herald_dead_letters");
        }

        Assert.Equal(0, await deadLetters.CountAsync(DeadLetterQuery.All));
        Assert.Equal(0, await deadLetters.CountAsync(new DeadLetterQuery { Endpoint = "ep-0" }));
    }

    [Fact]
    public async Task Open_OfAFileAtVersion7_CountsTheDeadLettersItHolds()
    {
        using var database = new TempDatabase();
        await (await SqliteEventStore.OpenAsync(database.Path)).DisposeAsync();

        // Back to version 7 (no counts), then dead letters written as that version wrote them.
        using (var raw = database.OpenRaw())
        {
            Execute(raw, """
                DROP TRIGGER herald_dead_letters_counted_insert;
                DROP TRIGGER herald_dead_letters_counted_delete;
                DROP TRIGGER herald_dead_letters_counted_move;
                DROP TABLE herald_dead_letter_counts;
                DELETE FROM herald_schema WHERE version = 8;
                """);
            Execute(raw, Insert(300, "'ep-' || (value % 3)"));
        }

        await using var store = await SqliteEventStore.OpenAsync(database.Path);
        var deadLetters = new SqliteDeadLetterStore(store);

        Assert.Equal(100, await deadLetters.CountAsync(new DeadLetterQuery { Endpoint = "ep-2" }));
        Assert.Equal(300, await deadLetters.CountAsync(DeadLetterQuery.All));
        await deadLetters.AddAsync(DeadLetterStoreConformance.NewDeadLetter("ep-2"));
        await AssertCountsMatchRowsAsync(database, deadLetters, ["ep-0", "ep-1", "ep-2"]);
    }

    [Fact]
    public async Task Open_OfAFileAtVersion8_ClustersItsDeadLettersByEndpointKeepingEveryRowAndCount()
    {
        using var database = new TempDatabase();
        using (var raw = database.OpenRaw())
        {
            // A file as version 8 left it: migrations 1 to 8, recorded as Migrate records them, then dead letters with every
            // column filled, the optional ones on every other row.
            Execute(raw, "CREATE TABLE herald_schema (version INTEGER NOT NULL PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT");
            foreach (var migration in SqliteSchema.Migrations.Where(m => m.Version <= 8))
            {
                Execute(raw, migration.Sql);
                Execute(raw, $"INSERT INTO herald_schema (version, description, applied_at) VALUES ({migration.Version}, 'v', '2026-01-01T00:00:00Z')");
            }

            Execute(raw, """
                WITH RECURSIVE g(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM g WHERE value < 600)
                INSERT INTO herald_dead_letters (id, endpoint, cause, error_type, error_message, stack_trace, fingerprint, first_failure,
                                                 first_failure_offset, last_failure, last_failure_offset, attempt_count, retry_count,
                                                 last_retry_error, last_retry_time, last_retry_offset, message_id, message_type, schema_version,
                                                 time, time_offset, correlation_id, causation_id, user_id, partition_key, content_type, headers,
                                                 body, delivery_attempt)
                SELECT randomblob(16), 'ep-' || (value % 3), 'RetriesExhausted', 'E', 'm ' || value,
                       CASE WHEN value % 2 = 0 THEN 'at ' || value END, 'f', t + value, 60, t + value + 1, -120, value, value % 4,
                       CASE WHEN value % 2 = 0 THEN 'retry ' || value END, CASE WHEN value % 2 = 0 THEN t + value + 2 END,
                       CASE WHEN value % 2 = 0 THEN 0 END, randomblob(16), 't', 2, t + value, 30,
                       CASE WHEN value % 2 = 0 THEN 'c' END, CASE WHEN value % 2 = 0 THEN 'k' END, CASE WHEN value % 2 = 0 THEN 'u' END,
                       CASE WHEN value % 2 = 0 THEN 'p' END, 'application/json', CASE WHEN value % 2 = 0 THEN '{"h":"1"}' END,
                       randomblob(value % 50), 1 + value % 3
                  FROM g, (SELECT 639000000000000000 AS t)
                """);
        }

        var before = AllRows(database);
        await using var store = await SqliteEventStore.OpenAsync(database.Path);
        var deadLetters = new SqliteDeadLetterStore(store);

        Assert.Equal(before, AllRows(database));
        Assert.Contains("WITHOUT ROWID", (string)database.Scalar("SELECT sql FROM sqlite_schema WHERE name = 'herald_dead_letters'")!, StringComparison.Ordinal);
        await AssertCountsMatchRowsAsync(database, deadLetters, ["ep-0", "ep-1", "ep-2"]);

        // Keyset pages of one endpoint list its rows in id order, as before.
        var listed = new List<Guid>();
        Guid? after = null;
        while (await deadLetters.ListAsync(new DeadLetterQuery { Endpoint = "ep-1", After = after, Limit = 70 }) is { Count: > 0 } page)
        {
            listed.AddRange(page.Select(d => d.Id));
            after = page[^1].Id;
        }

        var ids = (await deadLetters.ListAsync(new DeadLetterQuery { Limit = 1000 })).Where(d => d.Endpoint == "ep-1").Select(d => d.Id).ToList();
        Assert.Equal(200, listed.Count);
        Assert.Equal(ids, listed);

        // An id stays unique on its own: the same dead letter again, or under another endpoint, is ignored.
        var added = DeadLetterStoreConformance.NewDeadLetter("ep-1");
        await deadLetters.AddAsync(added);
        await deadLetters.AddAsync(added);
        await deadLetters.AddAsync(added with { Endpoint = "ep-2" });
        Assert.Equal(201, await deadLetters.CountAsync(new DeadLetterQuery { Endpoint = "ep-1" }));
        Assert.Equal(200, await deadLetters.CountAsync(new DeadLetterQuery { Endpoint = "ep-2" }));
        Assert.Equal("ep-1", (await deadLetters.GetAsync(added.Id))?.Endpoint);
        Assert.True(await deadLetters.DeleteAsync(listed[7]));
        Assert.Null(await deadLetters.GetAsync(listed[7]));
        await AssertCountsMatchRowsAsync(database, deadLetters, ["ep-0", "ep-1", "ep-2"]);
    }

    // Every column of every dead letter, in id order, as text.
    private static List<string> AllRows(TempDatabase database)
    {
        using var connection = database.OpenRaw();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT * FROM herald_dead_letters ORDER BY id";
        using var reader = command.ExecuteReader();
        var rows = new List<string>();
        while (reader.Read())
        {
            rows.Add(string.Join('|', Enumerable.Range(0, reader.FieldCount).Select(i => reader.GetName(i) + "=" + reader.GetValue(i) switch
            {
                byte[] bytes => Convert.ToHexString(bytes),
                DBNull => "null",
                var value => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture),
            })));
        }

        return rows;
    }

    // Rows as the store writes them (ids as 16 big-endian bytes); value runs 1..rows.
    private static string Insert(int rows, string endpoint) => $"""
        WITH RECURSIVE g(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM g WHERE value < {rows})
        INSERT INTO herald_dead_letters (id, endpoint, cause, error_type, error_message, fingerprint, first_failure, first_failure_offset,
                                         last_failure, last_failure_offset, attempt_count, retry_count, message_id, message_type, schema_version,
                                         time, time_offset, content_type, body, delivery_attempt)
        SELECT randomblob(16), {endpoint}, 'RetriesExhausted', 'E', 'm', 'f', 0, 0, 0, 0, value, 0, randomblob(16), 't', 1, 0, 0, 'application/json', x'7b7d', 1
          FROM g
        """;

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private static async Task AssertCountsMatchRowsAsync(TempDatabase database, SqliteDeadLetterStore store, string[] endpoints)
    {
        foreach (var endpoint in endpoints)
        {
            var rows = (long)database.Scalar($"SELECT COUNT(*) FROM herald_dead_letters WHERE endpoint = '{endpoint}'")!;
            Assert.Equal(rows, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint }));
        }

        Assert.Equal((long)database.Scalar("SELECT COUNT(*) FROM herald_dead_letters")!, await store.CountAsync(DeadLetterQuery.All));
    }
}

/// <summary>
/// Issue 16: a page of dead letters starts where it starts in an index, not at the start of the table; a page of one endpoint
/// is a range of the table itself, clustered by (endpoint, id) since migration 9, with no lookup of each row elsewhere.
/// </summary>
public sealed class SqliteDeadLetterListPlanTests
{
    [Theory]
    [InlineData(true, true, "SEARCH herald_dead_letters USING PRIMARY KEY (endpoint=? AND id>?)")]
    [InlineData(true, false, "SEARCH herald_dead_letters USING PRIMARY KEY (endpoint=?)")]
    [InlineData(false, true, "SEARCH herald_dead_letters USING INDEX herald_dead_letters_by_id (id>?)")]
    public async Task ListPage_StartsInTheIndexAtThePage(bool byEndpoint, bool after, string expected)
    {
        using var database = new TempDatabase();
        await (await SqliteEventStore.OpenAsync(database.Path)).DisposeAsync();
        var query = new DeadLetterQuery { Endpoint = byEndpoint ? "ep" : null, After = after ? Guid.CreateVersion7() : null };

        using var raw = database.OpenRaw();
        using var command = raw.CreateCommand();
        command.CommandText = "EXPLAIN QUERY PLAN " + SqliteDeadLetterStore.ListSqlFor(query);
        for (var i = 0; i < 7; i++)
        {
            command.Parameters.AddWithValue("$p" + i, DBNull.Value);
        }

        var plan = new List<string>();
        using (var reader = command.ExecuteReader())
        {
            while (reader.Read())
            {
                plan.Add(reader.GetString(3));
            }
        }

        Assert.Contains(plan, line => line.Contains(expected, StringComparison.Ordinal));
        Assert.DoesNotContain(plan, line => line.Contains("TEMP B-TREE", StringComparison.Ordinal));
    }

    [Fact]
    public async Task PurgeOfOneEndpoint_StartsInTheEndpointIndex()
    {
        using var database = new TempDatabase();
        await (await SqliteEventStore.OpenAsync(database.Path)).DisposeAsync();

        using var raw = database.OpenRaw();
        using var command = raw.CreateCommand();
        command.CommandText = "EXPLAIN QUERY PLAN " + SqliteDeadLetterStore.DeleteManySqlFor(new DeadLetterQuery { Endpoint = "ep" });
        for (var i = 0; i < 7; i++)
        {
            command.Parameters.AddWithValue("$p" + i, DBNull.Value);
        }

        var plan = new List<string>();
        using (var reader = command.ExecuteReader())
        {
            while (reader.Read())
            {
                plan.Add(reader.GetString(3));
            }
        }

        Assert.Contains(plan, line => line.Contains("herald_dead_letters USING PRIMARY KEY (endpoint=?", StringComparison.Ordinal));
        Assert.DoesNotContain(plan, line => line.Contains("TEMP B-TREE", StringComparison.Ordinal));
    }
}
