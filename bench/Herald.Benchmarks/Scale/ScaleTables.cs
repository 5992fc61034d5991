using System.Diagnostics;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Outbox;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Herald.Benchmarks.Scale;

/// <summary>
/// The PostgreSQL outbox and dead-letter tables of one schema, through the stores <c>UsePostgres</c> registers. Between steps
/// both grow by one <c>INSERT ... SELECT FROM generate_series</c> each (already-sent outbox rows; dead letters spread over ten
/// endpoints); the measured operations go through the stores.
/// </summary>
internal sealed class ScaleTables(string connectionString, NpgsqlDataSource admin, string schema) : IAsyncDisposable
{
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
        services.AddHerald(h => h.UsePostgres(connectionString, o => o.Schema = schema));
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

        // Rows that arrive over months are vacuumed as they come; a bulk insert of this size is not, and the first reads after
        // it would pay for setting every page's hint bits. Vacuum, so the step measures the table and not that one-off.
        await using var vacuum = admin.CreateCommand($"VACUUM {s}.outbox, {s}.dead_letters");
        vacuum.CommandTimeout = 0;
        await vacuum.ExecuteNonQueryAsync(cancellationToken);
        Rows = target;
        _deadLetterRows += add;
        LoadRate = add / clock.Elapsed.TotalSeconds;
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

    /// <summary>Counts one endpoint's dead letters, five times, and checks the count; the median's milliseconds.</summary>
    public async Task<double> MeasureCountAsync(CancellationToken cancellationToken)
    {
        var times = new double[5];
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

        await Herald.Benchmarks.EventStore.HeraldEventStoreContender.DropSchemaAsync(connectionString, schema);
    }

    private IOutboxStore Outbox => _outbox ?? throw new InvalidOperationException("Not started.");

    private IDeadLetterStore DeadLetters => _deadLetters ?? throw new InvalidOperationException("Not started.");
}
