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
/// Between steps both grow by one bulk statement each (<paramref name="fill"/>, given the rows already there and the rows to
/// add: already-sent outbox rows; dead letters spread over ten endpoints by <c>g % 10</c>, g from 1); the measured operations
/// go through the stores.
/// </summary>
/// <remarks>
/// Dead-letter ids are shaped as the store's own: a Guid v7 (<see cref="DeadLetter.Id"/>), written as failures happen, so
/// id order is the order rows were added. The fills make row g's id a v7 id of the time <see cref="IdEpochMs"/> + g
/// milliseconds with random low bits, and the listing starts at the middle row's time.
/// </remarks>
internal sealed class ScaleTables(string name, Action<HeraldBuilder> use, Func<long, long, CancellationToken, Task> fill, Func<ValueTask> cleanUp) : IAsyncDisposable
{
    /// <summary>The Unix time, in milliseconds, of the dead-letter id of row 0 (2026-01-01T00:00:00Z).</summary>
    public const long IdEpochMs = 1_767_225_600_000;

    /// <summary>How many counts the count row takes its median of.</summary>
    public const int CountSamples = 201;

    /// <summary>How many dead-letter listings the listing row takes its median of.</summary>
    public const int ListSamples = 21;

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
        await fill(Rows, add, cancellationToken);
        Rows = target;
        _deadLetterRows += add;
        LoadRate = add / clock.Elapsed.TotalSeconds;
    }

    /// <summary>The PostgreSQL fill: one <c>INSERT ... SELECT FROM generate_series</c> per table, then a vacuum and analyze.</summary>
    public static async Task FillPostgresAsync(NpgsqlDataSource admin, string schema, long from, long add, CancellationToken cancellationToken)
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
            SELECT (lpad(to_hex($2 + g), 12, '0') || '7' || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid,
                   'endpoint-' || (g % 10), 'RetriesExhausted', 'System.Exception', 'boom', 'fp-' || (g % 100), now(), now(), 3, 0,
                   gen_random_uuid(), 'scale-message', 1, now(), 'application/json', '\x7b7d', 1
              FROM generate_series(1, $1) g
            """,
        })
        {
            var command = new NpgsqlBatchCommand(sql);
            command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = add });
            if (sql.Contains("$2", StringComparison.Ordinal))
            {
                command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = IdEpochMs + from });
            }

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

    /// <summary>The SQLite fill: one <c>INSERT ... SELECT</c> over a counting CTE per table (outbox ids as random 16 bytes, dead-letter ids v7-shaped as above), then a WAL checkpoint.</summary>
    public static async Task FillSqliteAsync(string path, long from, long add, CancellationToken cancellationToken)
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
            SELECT unhex(printf('%012x7%03x8%015x', $from + n, random() & 4095, random() & 1152921504606846975)),
                   'endpoint-' || (n % 10), 'RetriesExhausted', 'System.Exception', 'boom', 'fp-' || (n % 100), $now, 0, $now, 0, 3, 0,
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
                command.Parameters.AddWithValue("$from", IdEpochMs + from);
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

    /// <summary>
    /// <see cref="ListSamples"/> listings of 20 keyset pages of 100 dead letters of one endpoint, each from its own row of
    /// the middle half of the table (a quarter of the way in to three quarters), so no listing reads the pages of another
    /// on a table larger than the caches; the median's rows per second.
    /// </summary>
    public async Task<double> MeasureListAsync(CancellationToken cancellationToken)
    {
        // One listing is 2,000 rows, 10 to 40 ms: a single one took whatever the machine was doing then (57k and 117k rows/s
        // from one step to the next with the same plan).
        var rates = new double[ListSamples];
        for (var sample = 0; sample < rates.Length; sample++)
        {
            var start = (_deadLetterRows / 4) + (_deadLetterRows / 2 * sample / (ListSamples - 1));
            Guid? after = new($"{IdEpochMs + start:x12}70008000000000000000");
            var clock = Stopwatch.StartNew();
            var read = 0;
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

            rates[sample] = read / clock.Elapsed.TotalSeconds;
        }

        Array.Sort(rates);
        return rates[rates.Length / 2];
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
