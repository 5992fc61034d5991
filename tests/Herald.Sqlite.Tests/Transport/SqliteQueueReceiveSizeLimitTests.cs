using Herald.Conformance.Transport;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>The SQLite queue against <see cref="ReceiveSizeLimitConformance"/>: a raw row with a body past the queue's send limit.</summary>
public sealed class SqliteQueueReceiveSizeLimitTests : ReceiveSizeLimitConformance, IDisposable
{
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    protected override void UseTransport(HeraldBuilder herald, int maxMessageBytes) =>
        herald.UseSqlite(_database.Path).UseSqliteQueue(_database.Path, o =>
        {
            o.PollInterval = TimeSpan.FromMilliseconds(100);
            o.MaxMessageBytes = maxMessageBytes;
        });

    protected override Task WriteRawAsync(IServiceProvider services, string queue, Guid messageId, byte[] body)
    {
        using var connection = _database.OpenRaw();
        using var insert = connection.CreateCommand();
        insert.CommandText =
            "INSERT INTO herald_queue_messages (queue, visible_at, attempts, message_id, message_type, schema_version, time, time_offset, " +
            "content_type, headers, body, enqueued_at) VALUES ($queue, 0, 0, $id, $type, 1, $time, 0, 'application/json', '{}', $body, 0)";
        insert.Parameters.AddWithValue("$queue", queue);
        insert.Parameters.AddWithValue("$id", messageId.ToByteArray(bigEndian: true));
        insert.Parameters.AddWithValue("$type", ProbeType);
        insert.Parameters.AddWithValue("$time", DateTimeOffset.UtcNow.UtcTicks);
        insert.Parameters.AddWithValue("$body", body);
        insert.ExecuteNonQuery();
        return Task.CompletedTask;
    }
}
