using Herald.Conformance;
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

    // Regression: a renewal opened its connection from the queue's pool; with every connection of that pool held (by sends or
    // settlements behind a slow server, or by more workers than a small Maximum Pool Size), the open waited the pool's
    // Timeout (15 s), well past the 1 s lease, and the other instance took the message from the running handler.
    [Fact]
    public async Task AHandlerRunningForSeveralLeases_KeepsItsMessage_AndItsLeaseIsRenewedInTime_WhileTheQueuesConnectionPoolIsExhausted()
    {
        var queue = "exhausted-" + Guid.NewGuid().ToString("N")[..8];
        var a = (PostgresQueueTransport)await OpenInstanceAsync(PostgresTestDatabase.ConnectionString + $";Maximum Pool Size=3;Application Name={queue}");
        await using var b = await OpenInstanceAsync();
        await using var slow = await LongHandler.StartAsync(a, queue);

        await using (await ExhaustPoolAsync(a))
        {
            await using var other = await slow.CompeteAsync(b);
            await AssertLeaseHeldAsync(slow, queue, "the running handler's lease ran out", "the message was taken from a running handler");
        }

        await slow.ReleaseAndAssertHandledOnlyByItAsync(() => CountQueuedAsync(queue));

        // The renewals' own connections, at most two, named after the transport's, are closed with it.
        var renewalConnections = $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{queue}-renewals'";
        Assert.InRange(await PostgresTestDatabase.ScalarAsync<long>(renewalConnections), 1, 2);
        await a.DisposeAsync();
        await Eventually.UntilAsync(async () => await PostgresTestDatabase.ScalarAsync<long>(renewalConnections) == 0, "the renewals' connections are closed");
    }

    // Regression: a claim being settled was taken out of the renewals, and its settlement opened its connection from the
    // queue's pool; with every connection of that pool held, the ack waited the pool's Timeout (15 s), the 1 s lease ran out
    // meanwhile, and the other instance handled the message again although its handler had returned (the late ack was refused).
    [Fact]
    public async Task AHandlersAck_WaitingForAConnectionOfTheExhaustedPool_KeepsTheMessageLeased_AndItIsHandledOnce()
    {
        var queue = "settling-" + Guid.NewGuid().ToString("N")[..8];
        var a = (PostgresQueueTransport)await OpenInstanceAsync(PostgresTestDatabase.ConnectionString + $";Maximum Pool Size=3;Application Name={queue}");
        await using var b = await OpenInstanceAsync();
        await using var slow = await LongHandler.StartAsync(a, queue);
        await using (await ExhaustPoolAsync(a))
        {
            await using var other = await slow.CompeteAsync(b);

            // The handler returns; its ack waits for a connection until the pool comes free below.
            slow.Release();
            await AssertLeaseHeldAsync(slow, queue, "the settling message's lease ran out", "the message was handled again while its ack waited");
        }

        await slow.ReleaseAndAssertHandledOnlyByItAsync(() => CountQueuedAsync(queue));
    }

    protected override Task<ITransport> OpenInstanceAsync() => OpenInstanceAsync(PostgresTestDatabase.ConnectionString);

    protected override Task<ITransport> OpenInstanceAsync(TimeProvider clock, TimeSpan lease) => OpenInstanceAsync(PostgresTestDatabase.ConnectionString, clock, lease);

    protected override async Task<IReadOnlyDictionary<Guid, DateTimeOffset>> LeasesAsync(string queue)
    {
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            $"SELECT message_id, lease_until FROM \"{_schema}\".queue_messages WHERE queue = '{queue}' AND lease_owner IS NOT NULL", connection);
        await using var rows = await command.ExecuteReaderAsync();
        var leases = new Dictionary<Guid, DateTimeOffset>();
        while (await rows.ReadAsync())
        {
            leases[rows.GetGuid(0)] = rows.GetFieldValue<DateTimeOffset>(1);
        }

        return leases;
    }

    private async Task<ITransport> OpenInstanceAsync(string connectionString, TimeProvider? clock = null, TimeSpan? lease = null)
    {
        var transport = await PostgresQueueTransportFactory.CreateAsync(connectionString, o =>
        {
            o.Schema = _schema;
            o.LeaseDuration = lease ?? Lease;
            o.PollInterval = TimeSpan.FromMilliseconds(50);
            o.TimeProvider = clock;
        });
        _transports.Add(transport);
        return transport;
    }

    /// <summary>Takes every connection of the instance's pool (its LISTEN connection holds one) until none comes free for half a second; disposing gives them back.</summary>
    private static async Task<IAsyncDisposable> ExhaustPoolAsync(PostgresQueueTransport instance)
    {
        var held = new HeldConnections();
        while (true)
        {
            using var wait = new CancellationTokenSource(TimeSpan.FromMilliseconds(500));
            try
            {
                held.Add(await instance.DataSource.OpenConnectionAsync(wait.Token));
            }
            catch (OperationCanceledException) when (wait.IsCancellationRequested)
            {
                return held;
            }
        }
    }

    /// <summary>For four lease lengths, looks at the queue's lease in the table (it must never run out) and at what was handled (once, by "a").</summary>
    private async Task AssertLeaseHeldAsync(LongHandler slow, string queue, string ranOut, string takenAgain)
    {
        var window = TimeProvider.System.GetTimestamp();
        while (TimeProvider.System.GetElapsedTime(window) < Lease * 4)
        {
            var ahead = await PostgresTestDatabase.ScalarAsync<double>(
                $"SELECT coalesce(extract(epoch FROM max(lease_until) - clock_timestamp()), -1)::float8 FROM \"{_schema}\".queue_messages WHERE queue = '{queue}'");
            Assert.True(ahead > 0, $"{ranOut} ({ahead:F3} s ahead): no renewal landed within the lease");
            await slow.Seen.AssertNoMoreThanAsync(1, Lease / 10, takenAgain);
        }
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

    private sealed class HeldConnections : List<NpgsqlConnection>, IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            foreach (var connection in this)
            {
                await connection.DisposeAsync();
            }
        }
    }

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
