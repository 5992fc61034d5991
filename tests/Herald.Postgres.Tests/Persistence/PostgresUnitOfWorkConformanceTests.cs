using Herald.Conformance.Persistence;
using Herald.Hosting;
using Herald.Persistence;
using Herald.Reliability.Inbox;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
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

    // A statement of the application's that failed on the unit of work's transaction aborted it where Herald could not see:
    // caught by the handler, the commit's COMMIT was answered by PostgreSQL with a silent ROLLBACK, and CommitAsync returned
    // as if the inbox mark (and any append or outbox row) had been stored, so the message was acked with nothing of it kept.
    [Fact]
    public async Task AnApplicationStatementThatFailedOnTheTransaction_CaughtByTheHandler_FailsTheCommit_InsteadOfLosingTheWritesSilently()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(UseEngine);
        using var host = builder.Build();
        await host.StartAsync();
        var messageId = Guid.NewGuid();

        await using (var scope = host.Services.CreateAsyncScope())
        {
            var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
            Assert.True(await scope.ServiceProvider.GetRequiredService<IInbox>().TryMarkHandledAsync("app", messageId, TimeSpan.FromMinutes(10), unitOfWork));
            var transaction = await unitOfWork.GetNpgsqlTransactionAsync();
            await using (var failing = new NpgsqlCommand("SELECT 1/0", transaction.Connection, transaction))
            {
                await Assert.ThrowsAsync<PostgresException>(() => failing.ExecuteScalarAsync());
            }

            var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => unitOfWork.CommitAsync().AsTask());
            Assert.Contains("aborted", refused.Message, StringComparison.Ordinal);
        }

        Assert.False(await host.Services.GetRequiredService<IInbox>().IsHandledAsync("app", messageId));
        await host.StopAsync();
    }

    protected override async ValueTask<bool> UserRowExistsAsync(IServiceProvider services, string key) =>
        await PostgresTestDatabase.ScalarAsync<long>($"SELECT COUNT(*) FROM \"{_schema}\".app_rows WHERE key = '{key}'") == 1;
}
