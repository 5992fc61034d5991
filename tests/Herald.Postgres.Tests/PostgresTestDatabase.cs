using Npgsql;

namespace Herald.Postgres.Tests;

/// <summary>The test server (HERALD_TEST_POSTGRES, by default the one scripts/services.sh starts) and throwaway schemas on it.</summary>
public static class PostgresTestDatabase
{
    public static string ConnectionString { get; } =
        Environment.GetEnvironmentVariable("HERALD_TEST_POSTGRES") is { Length: > 0 } configured
            ? configured
            : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";

    /// <summary>A schema name no other test run uses.</summary>
    public static string NewSchema() => "herald_test_" + Guid.NewGuid().ToString("N")[..12];

    public static async Task DropSchemaAsync(string schema)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", connection);
        await command.ExecuteNonQueryAsync();
    }

    public static async Task<T> ScalarAsync<T>(string sql)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        return (T)(await command.ExecuteScalarAsync())!;
    }

    public static async Task ExecuteAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }
}

/// <summary>A schema of its own for one test, dropped at the end.</summary>
public sealed class TemporarySchema : IAsyncDisposable
{
    public string Name { get; } = PostgresTestDatabase.NewSchema();

    public ValueTask DisposeAsync() => new(PostgresTestDatabase.DropSchemaAsync(Name));
}

/// <summary>One schema per test class, dropped when the class is done, so runs never collide.</summary>
public sealed class PostgresSchemaFixture : IAsyncLifetime
{
    public string Schema { get; } = PostgresTestDatabase.NewSchema();

    public NpgsqlDataSource DataSource { get; } = NpgsqlDataSource.Create(PostgresTestDatabase.ConnectionString);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await DataSource.DisposeAsync();
        await PostgresTestDatabase.DropSchemaAsync(Schema);
    }
}
