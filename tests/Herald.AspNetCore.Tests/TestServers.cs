using Npgsql;

namespace Herald.AspNetCore.Tests;

/// <summary>The servers the tests use on 127.0.0.1: PostgreSQL (env HERALD_TEST_POSTGRES) and Redis (env HERALD_TEST_REDIS).</summary>
internal static class TestServers
{
    public static string Postgres { get; } = Environment.GetEnvironmentVariable("HERALD_TEST_POSTGRES") is { Length: > 0 } pg
        ? pg
        : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";

    public static string Redis { get; } = Environment.GetEnvironmentVariable("HERALD_TEST_REDIS") is { Length: > 0 } redis ? redis : "127.0.0.1:6379";

    /// <summary>A schema name of its own for one test.</summary>
    public static string NewSchema(string prefix) => prefix + Guid.NewGuid().ToString("N")[..12];

    public static async Task DropSchemaAsync(string schema)
    {
        await using var connection = new NpgsqlConnection(Postgres);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", connection);
        await command.ExecuteNonQueryAsync();
    }
}
