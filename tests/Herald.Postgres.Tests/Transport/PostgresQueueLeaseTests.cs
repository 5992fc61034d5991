using Herald.Conformance.Transport;
using Herald.Postgres.Transport;
using Herald.Transport;
using Npgsql;

namespace Herald.Postgres.Tests.Transport;

/// <summary>The PostgreSQL queue against <see cref="LeasedQueueConformance"/>: instances with pools of their own, and a connection hammering the queue table.</summary>
[Collection(ThreadPoolStarvingCollection.Name)]
public sealed class PostgresQueueLeaseTests : LeasedQueueConformance, IAsyncLifetime
{
    private readonly string _schema = PostgresTestDatabase.NewSchema();
    private readonly List<ITransport> _transports = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var transport in _transports)
        {
            await transport.DisposeAsync();
        }

        await PostgresTestDatabase.DropSchemaAsync(_schema);
    }

    protected override async Task<ITransport> OpenInstanceAsync()
    {
        var transport = await PostgresQueueTransportFactory.CreateAsync(PostgresTestDatabase.ConnectionString, o =>
        {
            o.Schema = _schema;
            o.LeaseDuration = Lease;
            o.PollInterval = TimeSpan.FromMilliseconds(50);
        });
        _transports.Add(transport);
        return transport;
    }

    protected override IDisposable StartConcurrentWriter() => new Hammer(_schema);

    protected override Task StealLeasesAsync(string queue) =>
        // What another consumer's claim writes: its owner, a lease of its own, one more attempt.
        PostgresTestDatabase.ExecuteAsync(
            $"UPDATE \"{_schema}\".queue_messages SET lease_owner = gen_random_uuid(), lease_until = 'infinity', attempts = attempts + 1 WHERE queue = '{queue}'");

    protected override Task<long> CountQueuedAsync(string queue) =>
        PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{_schema}\".queue_messages WHERE queue = '{queue}'");

    protected override Task RefuseDeletingAsync(Guid messageId) =>
        PostgresTestDatabase.ExecuteAsync(
            $"CREATE FUNCTION \"{_schema}\".refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; " +
            $"CREATE TRIGGER refuse BEFORE DELETE ON \"{_schema}\".queue_messages FOR EACH ROW WHEN (OLD.message_id = '{messageId}') " +
            $"EXECUTE FUNCTION \"{_schema}\".refuse_delete()");

    /// <summary>Another process's writer: back-to-back inserts and deletes on the queue table from a thread of its own.</summary>
    private sealed class Hammer : IDisposable
    {
        private readonly Thread _thread;
        private volatile bool _stopped;

        public Hammer(string schema)
        {
            _thread = new Thread(() => Run(schema)) { IsBackground = true, Name = "PostgreSQL hammer" };
            _thread.Start();
        }

        public void Dispose()
        {
            _stopped = true;
            _thread.Join();
        }

        private void Run(string schema)
        {
            using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
            connection.Open();
            using var command = new NpgsqlCommand(
                $"INSERT INTO \"{schema}\".queue_messages (queue, message_id, message_type, schema_version, time, content_type, headers, body, enqueued_at, visible_at) " +
                "SELECT 'hammer', gen_random_uuid(), 'hammer', 1, now(), 'application/json', '{}'::jsonb, '\\x00'::bytea, now(), 'infinity' FROM generate_series(1, 50); " +
                $"DELETE FROM \"{schema}\".queue_messages WHERE queue = 'hammer'",
                connection);
            while (!_stopped)
            {
                command.ExecuteNonQuery();
            }
        }
    }
}
