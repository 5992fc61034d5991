using Herald.Conformance.Persistence;
using Herald.Hosting;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;

namespace Herald.Postgres.Tests.Persistence;

/// <summary>The unit-of-work contract on PostgreSQL, with the application's table written through <c>GetNpgsqlTransactionAsync</c>.</summary>
public sealed class PostgresUnitOfWorkConformanceTests : UnitOfWorkConformance, IAsyncLifetime
{
    private readonly string _schema = PostgresTestDatabase.NewSchema();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => PostgresTestDatabase.DropSchemaAsync(_schema);

    protected override bool WritesAtTheCommit => false;

    protected override void UseEngine(HeraldBuilder herald) => herald.UsePostgres(PostgresTestDatabase.ConnectionString, o => o.Schema = _schema);

    protected override async ValueTask OnStartedAsync(IServiceProvider services) =>
        await PostgresTestDatabase.ExecuteAsync($"CREATE TABLE \"{_schema}\".app_rows (key text PRIMARY KEY)");

    protected override async ValueTask WriteUserRowAsync(IUnitOfWork unitOfWork, string key)
    {
        var transaction = await unitOfWork.GetNpgsqlTransactionAsync();
        await using var insert = new NpgsqlCommand($"INSERT INTO \"{_schema}\".app_rows (key) VALUES ($1)", transaction.Connection, transaction);
        insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = key });
        await insert.ExecuteNonQueryAsync();
    }

    protected override async ValueTask<bool> UserRowExistsAsync(IServiceProvider services, string key) =>
        await PostgresTestDatabase.ScalarAsync<long>($"SELECT COUNT(*) FROM \"{_schema}\".app_rows WHERE key = '{key}'") == 1;
}
