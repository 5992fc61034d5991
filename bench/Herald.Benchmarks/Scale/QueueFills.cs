using Microsoft.Data.Sqlite;
using Npgsql;

namespace Herald.Benchmarks.Scale;

/// <summary>
/// Bulk fills of the queues' tables between steps (<see cref="ScaleQueue"/>): each copies the newest message the transport
/// wrote to the bench's queue, with a new message id, so the rows are what a send writes.
/// </summary>
internal static class QueueFills
{
    public static async Task PostgresAsync(NpgsqlDataSource admin, string schema, long count, CancellationToken cancellationToken)
    {
        var s = "\"" + schema + "\"";
        await using (var insert = admin.CreateCommand($"""
            INSERT INTO {s}.queue_messages (queue, message_id, message_type, schema_version, time, content_type, body, enqueued_at, visible_at)
            SELECT t.queue, gen_random_uuid(), t.message_type, t.schema_version, t.time, t.content_type, t.body, t.enqueued_at, t.visible_at
              FROM (SELECT * FROM {s}.queue_messages WHERE queue = '{ScaleQueue.Queue}' ORDER BY id DESC LIMIT 1) t, generate_series(1, $1) g
            """))
        {
            insert.Parameters.Add(new NpgsqlParameter<long> { TypedValue = count });
            insert.CommandTimeout = 0;
            if (await insert.ExecuteNonQueryAsync(cancellationToken) != count)
            {
                throw new InvalidOperationException("The queue had no message to copy.");
            }
        }

        // As for the outbox and dead letters: rows sent over months are vacuumed as they come; a bulk insert is not.
        await using var vacuum = admin.CreateCommand($"VACUUM {s}.queue_messages");
        vacuum.CommandTimeout = 0;
        await vacuum.ExecuteNonQueryAsync(cancellationToken);
    }

    public static async Task SqliteAsync(string path, long count, CancellationToken cancellationToken)
    {
        await using var connection = new SqliteConnection($"Data Source={path};Pooling=False");
        await connection.OpenAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = $"""
            PRAGMA busy_timeout = 60000;
            WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $count)
            INSERT INTO herald_queue_messages (queue, visible_at, attempts, message_id, message_type, schema_version, time, time_offset, content_type, body, enqueued_at)
            SELECT t.queue, t.visible_at, 0, randomblob(16), t.message_type, t.schema_version, t.time, t.time_offset, t.content_type, t.body, t.enqueued_at
              FROM (SELECT * FROM herald_queue_messages WHERE queue = '{ScaleQueue.Queue}' ORDER BY id DESC LIMIT 1) t, g
            """;
        command.Parameters.AddWithValue("$count", count);
        command.CommandTimeout = 0;
        if (await command.ExecuteNonQueryAsync(cancellationToken) != count)
        {
            throw new InvalidOperationException("The queue had no message to copy.");
        }

        // An import of this size leaves its rows in the -wal file; copy them into the file now, as an import would finish,
        // or the transport's next commits pay for copying them back (the first sends measured were 3x slower at 1 M).
        await using var checkpoint = connection.CreateCommand();
        checkpoint.CommandText = "PRAGMA wal_checkpoint(TRUNCATE)";
        checkpoint.CommandTimeout = 0;
        await checkpoint.ExecuteNonQueryAsync(cancellationToken);
    }
}
