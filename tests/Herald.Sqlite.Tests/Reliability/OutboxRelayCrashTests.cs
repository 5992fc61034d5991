using System.Globalization;
using Herald.Conformance.Reliability;
using Herald.Hosting;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Herald.Sqlite.Tests.Reliability;

/// <summary>
/// <see cref="OutboxRelayCrashConformance"/> on SQLite: the child relays to the SQLite queue in the same file, so the queue
/// outlives it and no server is needed.
/// </summary>
public sealed class OutboxRelayCrashTests(ITestOutputHelper output) : OutboxRelayCrashConformance(output), IDisposable
{
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    protected override string[] ChildArguments(int messages, int killAtSend) =>
        ["outbox-relay-sqlite", _database.Path, messages.ToString(CultureInfo.InvariantCulture), killAtSend.ToString(CultureInfo.InvariantCulture)];

    protected override void UseEngine(HeraldBuilder herald) =>
        herald.UseSqlite(_database.Path).UseSqliteQueue(_database.Path, o => o.PollInterval = TimeSpan.FromMilliseconds(50));

    protected override Task<(long Rows, long Pending)> CountOutboxAsync()
    {
        using var connection = _database.OpenRaw();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT COUNT(*), COUNT(*) FILTER (WHERE sent_at IS NULL) FROM herald_outbox";
        using var row = command.ExecuteReader();
        row.Read();
        return Task.FromResult((row.GetInt64(0), row.GetInt64(1)));
    }

    protected override Task<IReadOnlyDictionary<Guid, int>> CountQueuedAsync()
    {
        using var connection = _database.OpenRaw();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT message_id, COUNT(*) FROM herald_queue_messages WHERE queue = $queue GROUP BY message_id";
        command.Parameters.AddWithValue("$queue", Queue);
        using var rows = command.ExecuteReader();
        var counts = new Dictionary<Guid, int>();
        while (rows.Read())
        {
            // The queue stores ids as their 16 big-endian bytes.
            counts.Add(new Guid((byte[])rows.GetValue(0), bigEndian: true), rows.GetInt32(1));
        }

        return Task.FromResult<IReadOnlyDictionary<Guid, int>>(counts);
    }

    protected override Task<long> CountQueueDeadLettersAsync() =>
        Task.FromResult((long)_database.Scalar("SELECT COUNT(*) FROM herald_queue_dead_letters")!);

    protected override Task CreateEffectsTableAsync()
    {
        _database.Scalar("CREATE TABLE crash_effects (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL)");
        return Task.CompletedTask;
    }

    protected override ValueTask RecordEffectAsync(Guid messageId, IUnitOfWork unitOfWork, CancellationToken cancellationToken)
    {
        unitOfWork.EnlistSqliteWrite(connection =>
        {
            using var insert = connection.CreateCommand();
            insert.CommandText = "INSERT INTO crash_effects (message_id) VALUES ($id)";
            insert.Parameters.AddWithValue("$id", messageId.ToString());
            insert.ExecuteNonQuery();
        });
        return ValueTask.CompletedTask;
    }

    protected override Task<IReadOnlyDictionary<Guid, int>> CountEffectsAsync()
    {
        using var connection = _database.OpenRaw();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT message_id, COUNT(*) FROM crash_effects GROUP BY message_id";
        using var rows = command.ExecuteReader();
        var counts = new Dictionary<Guid, int>();
        while (rows.Read())
        {
            counts.Add(Guid.Parse(rows.GetString(0)), rows.GetInt32(1));
        }

        return Task.FromResult<IReadOnlyDictionary<Guid, int>>(counts);
    }
}
