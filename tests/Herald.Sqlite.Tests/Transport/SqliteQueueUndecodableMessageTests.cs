using Herald.Conformance.Transport;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>The SQLite queue against <see cref="UndecodableMessageConformance"/>: a row whose headers column holds no JSON object.</summary>
public sealed class SqliteQueueUndecodableMessageTests : UndecodableMessageConformance, IDisposable
{
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    protected override void UseTransport(HeraldBuilder herald) =>
        herald.UseSqlite(_database.Path).UseSqliteQueue(_database.Path, o => o.PollInterval = TimeSpan.FromMilliseconds(100));

    protected override Task WriteUndecodableAsync(string queue, Guid messageId)
    {
        using var connection = _database.OpenRaw();
        using var insert = connection.CreateCommand();
        insert.CommandText =
            "INSERT INTO herald_queue_messages (queue, visible_at, attempts, message_id, message_type, schema_version, time, time_offset, " +
            "content_type, headers, body, enqueued_at) VALUES ($queue, 0, 0, $id, $type, 1, 0, 0, 'application/json', '{not json', $body, 0)";
        insert.Parameters.AddWithValue("$queue", queue);
        insert.Parameters.AddWithValue("$id", messageId.ToByteArray(bigEndian: true));
        insert.Parameters.AddWithValue("$type", ProbeType);
        insert.Parameters.AddWithValue("$body", UndecodableBody.ToArray());
        insert.ExecuteNonQuery();
        return Task.CompletedTask;
    }

    protected override Task WriteBrokenAsync(string queue)
    {
        // A 2-byte id, no type, a time past the calendar's end with an impossible offset, headers that are no object, no body.
        using var connection = _database.OpenRaw();
        using var insert = connection.CreateCommand();
        insert.CommandText =
            "INSERT INTO herald_queue_messages (queue, visible_at, attempts, message_id, message_type, schema_version, time, time_offset, " +
            "content_type, headers, body, enqueued_at) VALUES ($queue, 0, 0, x'0102', '', -7, 9223372036854775807, 99999, '', '[1,2]', x'', 0)";
        insert.Parameters.AddWithValue("$queue", queue);
        insert.ExecuteNonQuery();
        return Task.CompletedTask;
    }

    protected override Task<long> CountQueuedAsync(string queue) => Task.FromResult(Count("herald_queue_messages", queue));

    protected override Task<long> CountNativeDeadLettersAsync(string queue) => Task.FromResult(Count("herald_queue_dead_letters", queue));

    private long Count(string table, string queue) => (long)_database.Scalar($"SELECT COUNT(*) FROM {table} WHERE queue = '{queue}'")!;
}
