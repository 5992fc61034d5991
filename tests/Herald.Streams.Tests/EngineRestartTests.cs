using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Herald.Streams.Tests;

public sealed class SqliteRestartTests : IDisposable
{
    private readonly string _file = TestSqlite.NewFile("restart");

    [Fact]
    public async Task Sqlite_AFailedCommitMidStream_ResumesInANewHostWithoutLossOrDoubleCount() =>
        await ProcessorScenario.RunAsync(h => h.UseSqlite(_file).UseSqliteStreamState());

    public void Dispose() => TestSqlite.Delete(_file);
}

public sealed class PostgresRestartTests : IAsyncLifetime
{
    private static readonly string ConnectionString =
        Environment.GetEnvironmentVariable("HERALD_TEST_POSTGRES") is { Length: > 0 } configured
            ? configured
            : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";

    private readonly string _schema = "herald_streams_" + Guid.NewGuid().ToString("N")[..12];

    [Fact]
    public async Task Postgres_AFailedCommitMidStream_ResumesInANewHostWithoutLossOrDoubleCount() =>
        await ProcessorScenario.RunAsync(h => h.UsePostgres(ConnectionString, o => o.Schema = _schema).UsePostgresStreamState());

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE", connection);
        await command.ExecuteNonQueryAsync();
    }
}
