using Herald.Conformance.Transport;
using Herald.Sqlite.Transport;
using Herald.Transport;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>The SQLite queue against <see cref="LeasedQueueConformance"/>: instances on one file, and a raw connection hammering it.</summary>
[Collection(ThreadPoolStarvingCollection.Name)]
public sealed class SqliteQueueLeaseConformanceTests : LeasedQueueConformance, IDisposable
{
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    protected override Task<ITransport> OpenInstanceAsync() => OpenInstanceAsync(TimeProvider.System, Lease);

    protected override async Task<ITransport> OpenInstanceAsync(TimeProvider clock, TimeSpan lease) =>
        await SqliteQueueTransportFactory.OpenAsync(
            _database.Path,
            o =>
            {
                o.Synchronous = SqliteSynchronousMode.Normal;
                o.LeaseDuration = lease;
                o.BusyTimeout = Lease / 3;
                o.PollInterval = TimeSpan.FromMilliseconds(50);
            },
            clock);

    protected override Task<IReadOnlyDictionary<Guid, DateTimeOffset>> LeasesAsync(string queue)
    {
        using var connection = _database.OpenRaw();
        using var command = connection.CreateCommand();
        command.CommandText = $"SELECT hex(message_id), lease_until FROM herald_queue_messages WHERE queue = '{queue}' AND lease_owner IS NOT NULL";
        using var rows = command.ExecuteReader();
        var leases = new Dictionary<Guid, DateTimeOffset>();
        while (rows.Read())
        {
            leases[Guid.ParseExact(rows.GetString(0), "N")] = new DateTimeOffset(rows.GetInt64(1), TimeSpan.Zero);
        }

        return Task.FromResult<IReadOnlyDictionary<Guid, DateTimeOffset>>(leases);
    }

    protected override IDisposable StartConcurrentWriter() => new Hammer(_database);

    protected override Task StealLeasesAsync(string queue)
    {
        // What another consumer's claim writes: its owner, a lease of its own, one more attempt.
        Execute($"UPDATE herald_queue_messages SET lease_owner = 'another consumer', lease_until = 9223372036854775807, attempts = attempts + 1 WHERE queue = '{queue}'");
        return Task.CompletedTask;
    }

    protected override Task<long> CountQueuedAsync(string queue) =>
        Task.FromResult((long)_database.Scalar($"SELECT COUNT(*) FROM herald_queue_messages WHERE queue = '{queue}'")!);

    protected override Task RefuseDeletingAsync(Guid messageId)
    {
        // The column holds the id's 16 bytes in the order its text shows them.
        Execute(
            "CREATE TRIGGER test_refuse_delete BEFORE DELETE ON herald_queue_messages " +
            $"WHEN OLD.message_id = X'{messageId:N}' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
        return Task.CompletedTask;
    }

    private void Execute(string sql)
    {
        using var connection = _database.OpenRaw();
        using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA busy_timeout = 10000; " + sql;
        command.ExecuteNonQuery();
    }

    /// <summary>
    /// Another process's busy writer: write transactions on the file from a thread of its own, a millisecond apart. SQLite's
    /// lock is not fair: a writer that never lets go of it (no gap at all) starves every other writer, renewals and claims
    /// alike, which no lease design can help; a busy writer that lets go, as Herald's own does between groups, must not.
    /// </summary>
    private sealed class Hammer : IDisposable
    {
        private readonly Thread _thread;
        private readonly ManualResetEventSlim _stopped = new(false);

        public Hammer(TempDatabase database)
        {
            _thread = new Thread(() => Run(database)) { IsBackground = true, Name = "SQLite hammer" };
            _thread.Start();
        }

        public void Dispose()
        {
            _stopped.Set();
            _thread.Join();
            _stopped.Dispose();
        }

        private void Run(TempDatabase database)
        {
            using var connection = database.OpenRaw();
            using var command = connection.CreateCommand();
            command.CommandText = "PRAGMA busy_timeout = 10000; CREATE TABLE IF NOT EXISTS test_hammer (id INTEGER PRIMARY KEY, payload BLOB)";
            command.ExecuteNonQuery();
            command.CommandText = "BEGIN IMMEDIATE; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) INSERT INTO test_hammer (payload) SELECT randomblob(1024) FROM n; COMMIT";
            while (!_stopped.Wait(TimeSpan.FromMilliseconds(1)))
            {
                command.ExecuteNonQuery();
            }
        }
    }
}
