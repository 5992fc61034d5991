using Herald.Conformance.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Reliability;
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

/// <summary>Issue 16: a page of dead letters starts where it starts in an index, not at the start of the table.</summary>
public sealed class SqliteDeadLetterListPlanTests
{
    [Theory]
    [InlineData(true, true, "herald_dead_letters_by_endpoint (endpoint=? AND id>?)")]
    [InlineData(true, false, "herald_dead_letters_by_endpoint (endpoint=?)")]
    [InlineData(false, true, "(id>?)")]
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

        Assert.Contains(plan, line => line.Contains("herald_dead_letters_by_endpoint (endpoint=?", StringComparison.Ordinal));
        Assert.DoesNotContain(plan, line => line.Contains("TEMP B-TREE", StringComparison.Ordinal));
    }
}
