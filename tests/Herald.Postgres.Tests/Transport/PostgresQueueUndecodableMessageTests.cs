using Herald.Conformance.Transport;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Herald.Postgres.Tests.Transport;

/// <summary>The PostgreSQL queue against <see cref="UndecodableMessageConformance"/>: a row whose headers are JSON, but not an object of strings.</summary>
public sealed class PostgresQueueUndecodableMessageTests : UndecodableMessageConformance, IAsyncLifetime
{
    private readonly string _schema = PostgresTestDatabase.NewSchema();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => PostgresTestDatabase.DropSchemaAsync(_schema);

    protected override void UseTransport(HeraldBuilder herald) => herald.UsePostgresStoreAndQueue(_schema);

    protected override async Task WriteUndecodableAsync(string queue, Guid messageId)
    {
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var insert = new NpgsqlCommand(
            $"INSERT INTO \"{_schema}\".queue_messages (queue, message_id, message_type, schema_version, time, content_type, headers, body, enqueued_at, visible_at) " +
            "VALUES ($1, $2, $3, 1, now(), 'application/json', '{\"trace\": 1}'::jsonb, $4, now(), '-infinity')",
            connection);
        insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = queue });
        insert.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = messageId });
        insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = ProbeType });
        insert.Parameters.Add(new NpgsqlParameter<byte[]> { TypedValue = UndecodableBody.ToArray() });
        await insert.ExecuteNonQueryAsync();
    }

    protected override async Task WriteBrokenAsync(string queue)
    {
        // No type, a time at infinity, headers that are no object, an empty body and content type (the id is a uuid column).
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var insert = new NpgsqlCommand(
            $"INSERT INTO \"{_schema}\".queue_messages (queue, message_id, message_type, schema_version, time, content_type, headers, body, enqueued_at, visible_at) " +
            "VALUES ($1, gen_random_uuid(), '', -7, 'infinity', '', '[1, 2]'::jsonb, '', now(), '-infinity')",
            connection);
        insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = queue });
        await insert.ExecuteNonQueryAsync();
    }

    protected override Task<long> CountQueuedAsync(string queue) => CountAsync("queue_messages", queue);

    protected override Task<long> CountNativeDeadLettersAsync(string queue) => CountAsync("queue_dead_letters", queue);

    private Task<long> CountAsync(string table, string queue) =>
        PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{_schema}\".{table} WHERE queue = '{queue}'");
}
