using Npgsql;

namespace Herald.Streams.Tests;

/// <summary>The PostgreSQL server of the tests (HERALD_TEST_POSTGRES, else the local one), with a schema per test.</summary>
internal static class TestPostgres
{
    public static string ConnectionString { get; } =
        Environment.GetEnvironmentVariable("HERALD_TEST_POSTGRES") is { Length: > 0 } configured
            ? configured
            : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";

    public static string NewSchema() => "herald_streams_" + Guid.NewGuid().ToString("N")[..12];

    public static async Task DropAsync(string schema)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", connection);
        await command.ExecuteNonQueryAsync();
    }
}

/// <summary>A SQLite file in the temp folder, deleted with its WAL files and its leaders' lock files.</summary>
internal static class TestSqlite
{
    public static string NewFile(string purpose) => Path.Combine(Path.GetTempPath(), $"herald-streams-{purpose}-{Guid.NewGuid():N}.db");

    public static void Delete(string file) => Herald.Conformance.SqliteFiles.Delete(file);
}
