using System.Diagnostics;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Outbox;
using Microsoft.Extensions.DependencyInjection;
using Herald.Hosting;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Herald.Benchmarks.Scale;

/// <summary>
/// The outbox and dead-letter tables of one engine, through the stores its <c>UseX</c> registers (<paramref name="use"/>).
/// Between steps both grow by one bulk statement each (<paramref name="fill"/>: already-sent outbox rows; dead letters spread
/// over ten endpoints by <c>g % 10</c>, g from 1); the measured operations go through the stores.
/// </summary>
internal sealed class ScaleTables(string name, Action<HeraldBuilder> use, Func<long, CancellationToken, Task> fill, Func<ValueTask> cleanUp) : IAsyncDisposable
{
    /// <summary>How many counts the count row takes its median of.</summary>
    public const int CountSamples = 201;

    public string Name => name;

    private ServiceProvider? _services;
    private IOutboxStore? _outbox;
    private IDeadLetterStore? _deadLetters;
    private long _deadLetterRows;

    /// <summary>Rows in each table.</summary>
    public long Rows { get; private set; }

    /// <summary>Rows per second of the last growth (both tables).</summary>
    public double LoadRate { get; private set; } = 50_000;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var services = new ServiceCollection();
        services.AddHerald(use);
        _services = services.BuildServiceProvider();
        _outbox = _services.GetRequiredService<IOutboxStore>();
        _deadLetters = _services.GetRequiredService<IDeadLetterStore>();
        await _outbox.CountPendingAsync(cancellationToken);
    }

    public async Task GrowAsync(long target, CancellationToken cancellationToken)
    {
        var add = target - Rows;
        if (add <= 0)
        {
            return;
        }

        var clock = Stopwatch.StartNew();
        await fill(add, cancellationToken);
        Rows = target;
        _deadLetterRows += add;
        LoadRate = add / clock.Elapsed.TotalSeconds;
    }

    /// <summary>The PostgreSQL fill: one <c>INSERT ... SELECT FROM generate_series</c> per table, then a vacuum and analyze.</summary>
    public static async Task FillPostgresAsync(NpgsqlDataSource admin, string schema, long add, CancellationToken cancellationToken)
    {
        var s = "\"" + schema + "\"";
        await using var batch = admin.CreateBatch();
        foreach (var sql in new[]
        {
            $"""
            INSERT INTO {s}.outbox (id, destination_kind, destination, created_at, sent_at, message_id, message_type, schema_version, time, content_type, body, delivery_attempt)
            SELECT gen_random_uuid(), 'Queue', 'orders', now(), now(), gen_random_uuid(), 'scale-message', 1, now(), 'application/json', '\x7b7d', 1
              FROM generate_series(1, $1) g
            """,
            $"""
            INSERT INTO {s}.dead_letters (id, endpoint, cause, error_type, error_message, fingerprint, first_failure, last_failure, attempt_count, retry_count,
                                          message_id, message_type, schema_version, time, content_type, body, delivery_attempt)
            SELECT gen_random_uuid(), 'endpoint-' || (g % 10), 'RetriesExhausted', 'System.Exception', 'boom', 'fp-' || (g % 100), now(), now(), 3, 0,
                   gen_random_uuid(), 'scale-message', 1, now(), 'application/json', '\x7b7d', 1
              FROM generate_series(1, $1) g
            """,
        })
        {
            var command = new NpgsqlBatchCommand(sql);
            command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = add });
            batch.BatchCommands.Add(command);
        }

        batch.Timeout = 0;
        await batch.ExecuteNonQueryAsync(cancellationToken);

        // Rows that arrive over months are vacuumed and analyzed as they come; a bulk insert of this size is not, and the first
        // reads after it would pay for setting every page's hint bits. Vacuum, so the step measures the table and not that
        // one-off; and analyze, as an import is finished: after a plain VACUUM, autovacuum's ANALYZE of the 10 M-row tables started
        // within seconds, in the middle of the step's measurements (seen in pg_stat_user_tables.last_autoanalyze, 18 s after the
        // fill's VACUUM), and took the 2-core machine from the sub-millisecond count.
        await using var vacuum = admin.CreateCommand($"VACUUM (ANALYZE) {s}.outbox, {s}.dead_letters");
        vacuum.CommandTimeout = 0;
        await vacuum.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>The SQLite fill: one <c>INSERT ... SELECT</c> over a counting CTE per table (ids as random 16 bytes), then a WAL checkpoint.</summary>
    public static async Task FillSqliteAsync(string path, long add, CancellationToken cancellationToken)
    {
        await using var connection = new SqliteConnection($"Data Source={path};Pooling=False");
        await connection.OpenAsync(cancellationToken);
        foreach (var sql in new[]
        {
            "PRAGMA busy_timeout = 60000",
            """
            WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $add)
            INSERT INTO herald_outbox (id, destination_kind, destination, created_at, created_offset, sent_at, sent_offset, message_id, message_type,
                                       schema_version, time, time_offset, content_type, body, delivery_attempt)
            SELECT randomblob(16), 'Queue', 'orders', $now, 0, $now, 0, randomblob(16), 'scale-message', 1, $now, 0, 'application/json', x'7b7d', 1 FROM g
            """,
            """
            WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $add)
            INSERT INTO herald_dead_letters (id, endpoint, cause, error_type, error_message, fingerprint, first_failure, first_failure_offset, last_failure,
                                             last_failure_offset, attempt_count, retry_count, message_id, message_type, schema_version, time, time_offset,
                                             content_type, body, delivery_attempt)
            SELECT randomblob(16), 'endpoint-' || (n % 10), 'RetriesExhausted', 'System.Exception', 'boom', 'fp-' || (n % 100), $now, 0, $now, 0, 3, 0,
                   randomblob(16), 'scale-message', 1, $now, 0, 'application/json', x'7b7d', 1 FROM g
            """,
            "PRAGMA wal_checkpoint(TRUNCATE)",
        })
        {
            await using var command = connection.CreateCommand();
            command.CommandText = sql;
            command.CommandTimeout = 0;
            if (sql.Contains("$add", StringComparison.Ordinal))
            {
                command.Parameters.AddWithValue("$add", add);
                command.Parameters.AddWithValue("$now", DateTimeOffset.UtcNow.UtcTicks);
            }

            await command.ExecuteNonQueryAsync(cancellationToken);
        }
    }

    /// <summary>Adds <paramref name="count"/> messages (lists of 100), then relays them as the relay does: fetch 100 due, mark them sent; messages per second of the relay.</summary>
    public async Task<double> MeasureRelayAsync(int count, CancellationToken cancellationToken)
    {
        for (var added = 0; added < count; added += 100)
        {
            var now = DateTimeOffset.UtcNow;
            var list = Enumerable.Range(0, 100).Select(_ => new OutboxMessage
            {
                Id = Guid.CreateVersion7(),
                DestinationKind = OutboxDestinationKind.Queue,
                Destination = "orders",
                CreatedAt = now,
                Envelope = new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "scale-message", Time = now, Body = "{}"u8.ToArray() },
            }).ToList();
            await Outbox.AddAsync(list, cancellationToken: cancellationToken);
        }

        var clock = Stopwatch.StartNew();
        var relayed = 0;
        while (relayed < count)
        {
            var page = await Outbox.FetchPendingAsync(100, DateTimeOffset.UtcNow, cancellationToken);
            if (page.Count == 0)
            {
                throw new InvalidOperationException($"The outbox ran dry after {relayed} of {count} messages.");
            }

            await Outbox.MarkSentAsync([.. page.Select(m => m.Id)], DateTimeOffset.UtcNow, cancellationToken);
            relayed += page.Count;
        }

        Rows += count;
        return relayed / clock.Elapsed.TotalSeconds;
    }

    /// <summary>20 keyset pages of 100 dead letters of one endpoint, from the middle of the id range; rows per second.</summary>
    public async Task<double> MeasureListAsync(CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var read = 0;
        Guid? after = new("80000000-0000-0000-0000-000000000000");
        for (var page = 0; page < 20; page++)
        {
            var rows = await DeadLetters.ListAsync(new DeadLetterQuery { Endpoint = "endpoint-3", After = after, Limit = 100 }, cancellationToken);
            read += rows.Count;
            if (rows.Count < 100)
            {
                break;
            }

            after = rows[^1].Id;
        }

        return read / clock.Elapsed.TotalSeconds;
    }

    /// <summary>Counts one endpoint's dead letters <see cref="CountSamples"/> times, checking each count; the median's milliseconds.</summary>
    public async Task<double> MeasureCountAsync(CancellationToken cancellationToken)
    {
        // A count is a fraction of a millisecond, near the machine's noise: a median of five took whatever the server or a
        // neighbour was doing in that millisecond (0.2 to 0.4 ms from one step to the next with the same two-page plan).
        var times = new double[CountSamples];
        for (var i = 0; i < times.Length; i++)
        {
            var clock = Stopwatch.StartNew();
            var count = await DeadLetters.CountAsync(new DeadLetterQuery { Endpoint = "endpoint-3" }, cancellationToken);
            times[i] = clock.Elapsed.TotalMilliseconds;

            // Each fill spreads its rows over ten endpoints by g % 10, g from 1: a tenth each, give or take one per fill.
            if (Math.Abs(count - (_deadLetterRows / 10)) > 20)
            {
                throw new InvalidOperationException($"Counted {count} dead letters of endpoint-3 in {_deadLetterRows} rows.");
            }
        }

        Array.Sort(times);
        return times[times.Length / 2];
    }

    public async ValueTask DisposeAsync()
    {
        if (_services is not null)
        {
            await _services.DisposeAsync();
        }

        await cleanUp();
    }

    private IOutboxStore Outbox => _outbox ?? throw new InvalidOperationException("Not started.");

    private IDeadLetterStore DeadLetters => _deadLetters ?? throw new InvalidOperationException("Not started.");
}
