using System.Globalization;
using Herald.Conformance.Reliability;
using Herald.Hosting;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Xunit.Abstractions;

namespace Herald.Postgres.Tests.Reliability;

/// <summary>
/// <see cref="OutboxRelayCrashConformance"/> on PostgreSQL, in a schema of its own: the child relays to the PostgreSQL
/// queue in the same schema, and each run's relay takes over the outbox leadership the killed one's session held.
/// </summary>
public sealed class OutboxRelayCrashTests(ITestOutputHelper output) : OutboxRelayCrashConformance(output), IAsyncLifetime
{
    private readonly TemporarySchema _schema = new();

    private string Schema => $"\"{_schema.Name}\"";

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => _schema.DisposeAsync().AsTask();

    protected override string[] ChildArguments(int messages, int killAtSend) =>
    [
        "outbox-relay-postgres", PostgresTestDatabase.ConnectionString, _schema.Name,
        messages.ToString(CultureInfo.InvariantCulture), killAtSend.ToString(CultureInfo.InvariantCulture),
    ];

    protected override void UseEngine(HeraldBuilder herald) => herald
        .UsePostgres(PostgresTestDatabase.ConnectionString, o => o.Schema = _schema.Name)
        .UsePostgresQueue(PostgresTestDatabase.ConnectionString, o =>
        {
            o.Schema = _schema.Name;
            o.PollInterval = TimeSpan.FromMilliseconds(50);
        });

    protected override async Task<(long Rows, long Pending)> CountOutboxAsync()
    {
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"SELECT count(*), count(*) FILTER (WHERE sent_at IS NULL) FROM {Schema}.outbox", connection);
        await using var row = await command.ExecuteReaderAsync();
        await row.ReadAsync();
        return (row.GetInt64(0), row.GetInt64(1));
    }

    protected override async Task<IReadOnlyDictionary<Guid, int>> CountQueuedAsync() =>
        await CountPerIdAsync($"SELECT message_id, count(*) FROM {Schema}.queue_messages WHERE queue = '{Queue}' GROUP BY message_id");

    protected override Task<long> CountQueueDeadLettersAsync() =>
        PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM {Schema}.queue_dead_letters");

    protected override Task CreateEffectsTableAsync() =>
        PostgresTestDatabase.ExecuteAsync($"CREATE TABLE {Schema}.crash_effects (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, message_id uuid NOT NULL)");

    protected override async ValueTask RecordEffectAsync(Guid messageId, IUnitOfWork unitOfWork, CancellationToken cancellationToken)
    {
        var transaction = await unitOfWork.GetNpgsqlTransactionAsync(cancellationToken);
        await using var insert = new NpgsqlCommand($"INSERT INTO {Schema}.crash_effects (message_id) VALUES ($1)", transaction.Connection, transaction);
        insert.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = messageId });
        await insert.ExecuteNonQueryAsync(cancellationToken);
    }

    protected override async Task<IReadOnlyDictionary<Guid, int>> CountEffectsAsync() =>
        await CountPerIdAsync($"SELECT message_id, count(*) FROM {Schema}.crash_effects GROUP BY message_id");

    private static async Task<Dictionary<Guid, int>> CountPerIdAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await using var rows = await command.ExecuteReaderAsync();
        var counts = new Dictionary<Guid, int>();
        while (await rows.ReadAsync())
        {
            counts.Add(rows.GetGuid(0), checked((int)rows.GetInt64(1)));
        }

        return counts;
    }
}
