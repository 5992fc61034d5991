using Npgsql;

namespace Herald.Benchmarks.PostgresQueue;

/// <summary>
/// The same queue pattern written directly on Npgsql 10: a plain table per queue, one INSERT per send, and consumers that
/// delete the oldest unlocked row (<c>FOR UPDATE SKIP LOCKED</c>) inside a transaction that commits once the message is
/// handled. With <paramref name="notify"/>, each send also notifies a channel in its own transaction, as a raw queue that
/// wakes its consumers would (send phase only).
/// </summary>
internal sealed class RawNpgsqlQueueContender(string connectionString, string applicationName, NpgsqlDataSource admin, bool notify) : IQueueContender
{
    public string Name => notify ? "Npgsql + NOTIFY" : "Npgsql";

    public string Setup => notify
        ? "as **Npgsql**, but each send is `INSERT ... RETURNING pg_notify($5, 'orders')` (the notification is sent by the insert's own transaction at its commit); send phase only"
        : "Npgsql 10, a table `(id bigint identity primary key, message_id uuid, message_type text, body bytea, enqueued_at timestamptz)` in a fresh schema; " +
          $"send: one data source (pool, auto-prepare on), {QueueWorkload.Senders} tasks each awaiting an autocommitted `INSERT ... VALUES ($1..$4)` before the next; " +
          "drain \"4 × 1\": 4 data sources (as 4 processes), each one connection running a loop of `BEGIN; DELETE FROM messages WHERE id = (SELECT id FROM messages ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id, message_id, message_type, body, enqueued_at;` " +
          "count; `COMMIT` (the row stays locked, hidden from the others, until the commit: at least once, like Herald's lease; no lease expiry, retries, delays or dead letters). " +
          "An empty result before the end retries after 1 ms (it only happens at the tail)";

    public IReadOnlyList<DrainShape> Drains { get; } = notify ? [] : [new(4, 1)];

    public async Task<IQueueRound> NewRoundAsync(CancellationToken cancellationToken)
    {
        var schema = "herald_pgqraw_" + Guid.NewGuid().ToString("N")[..12];
        await QueueWorkload.ExecuteAsync(admin, $"""
            CREATE SCHEMA "{schema}";
            CREATE TABLE "{schema}".messages (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                message_id uuid NOT NULL,
                message_type text NOT NULL,
                body bytea NOT NULL,
                enqueued_at timestamptz NOT NULL
            );
            """, cancellationToken);
        return new Round(connectionString, applicationName, admin, schema, notify);
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private sealed class Round(string connectionString, string applicationName, NpgsqlDataSource admin, string schema, bool notify) : IQueueRound
    {
        private readonly NpgsqlDataSource _senders = QueueWorkload.DataSource(connectionString, applicationName);

        public async Task SendAsync(int count, int senders, CancellationToken cancellationToken)
        {
            var sql = $"INSERT INTO \"{schema}\".messages (message_id, message_type, body, enqueued_at) VALUES ($1, $2, $3, $4)" +
                (notify ? " RETURNING pg_notify($5, 'orders')" : "");
            await QueueWorkload.RunConcurrentlyAsync(count, senders, async ct =>
            {
                await using var command = _senders.CreateCommand(sql);
                command.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = Guid.CreateVersion7() });
                command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = QueueWorkload.MessageType });
                command.Parameters.Add(new NpgsqlParameter<byte[]> { TypedValue = QueueWorkload.Body });
                command.Parameters.Add(new NpgsqlParameter<DateTimeOffset> { TypedValue = DateTimeOffset.UtcNow });
                if (notify)
                {
                    command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = schema });
                }

                await command.ExecuteNonQueryAsync(ct);
            }, cancellationToken);
        }

        public async Task<IQueueDrain> PrepareDrainAsync(DrainShape shape, CancellationToken cancellationToken)
        {
            var connections = new List<(NpgsqlDataSource, NpgsqlConnection)>();
            for (var i = 0; i < shape.Instances; i++)
            {
                var dataSource = QueueWorkload.DataSource(connectionString, applicationName);
                connections.Add((dataSource, await dataSource.OpenConnectionAsync(cancellationToken)));
            }

            return new Drain(connections, schema, shape.Concurrency);
        }

        public async ValueTask DisposeAsync()
        {
            await _senders.DisposeAsync();
            await QueueWorkload.ExecuteAsync(admin, $"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", CancellationToken.None);
        }
    }

    private sealed class Drain(List<(NpgsqlDataSource DataSource, NpgsqlConnection Connection)> instances, string schema, int concurrency) : IQueueDrain
    {
        public async Task RunAsync(int count, CancellationToken cancellationToken)
        {
            if (concurrency != 1)
            {
                throw new NotSupportedException("The raw consumer runs one loop per connection.");
            }

            var received = 0;
            var sql = $"DELETE FROM \"{schema}\".messages WHERE id = (SELECT id FROM \"{schema}\".messages ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) " +
                "RETURNING id, message_id, message_type, body, enqueued_at";
            var loops = instances.Select(instance => Task.Run(async () =>
            {
                await using var command = new NpgsqlCommand(sql, instance.Connection);
                await command.PrepareAsync(cancellationToken);
                while (Volatile.Read(ref received) < count)
                {
                    await using var transaction = await instance.Connection.BeginTransactionAsync(cancellationToken);
                    command.Transaction = transaction;
                    var got = false;
                    await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
                    {
                        if (await reader.ReadAsync(cancellationToken))
                        {
                            // Materialized as a consumer would before handling it.
                            _ = (reader.GetInt64(0), reader.GetGuid(1), reader.GetString(2), reader.GetFieldValue<byte[]>(3), reader.GetFieldValue<DateTimeOffset>(4));
                            got = true;
                        }
                    }

                    await transaction.CommitAsync(cancellationToken);
                    if (got)
                    {
                        Interlocked.Increment(ref received);
                    }
                    else
                    {
                        await Task.Delay(1, cancellationToken);
                    }
                }
            }, cancellationToken));
            await QueueWorkload.WaitAsync(Task.WhenAll(loops), "Npgsql", () => Volatile.Read(ref received), count, cancellationToken);
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var (dataSource, connection) in instances)
            {
                await connection.DisposeAsync();
                await dataSource.DisposeAsync();
            }
        }
    }
}
