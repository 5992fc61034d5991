using Herald.Conformance;
using Herald.Conformance.Projections;
using Herald.EventSourcing;
using Herald.Persistence;
using Herald.Projections;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Projections;
using Herald.Postgres.Tests.Reliability;
using Npgsql;
using Xunit;

namespace Herald.Postgres.Tests.Projections;

/// <summary>The read-model store contract on a PostgreSQL schema shared by the class's tests (each uses a table of its own).</summary>
public sealed class PostgresReadModelStoreConformanceTests(ReliabilitySchema schema) : ReadModelStoreConformance, IClassFixture<ReliabilitySchema>
{
    protected override ValueTask<IReadModelStore> CreateStoreAsync() => ValueTask.FromResult<IReadModelStore>(new PostgresReadModelStore(schema.Store));

    protected override ValueTask<(IEventStore Events, ICheckpointStore Checkpoints)> GetEventLogAsync(IReadModelStore store) => ValueTask.FromResult<(IEventStore, ICheckpointStore)>((schema.Store, schema.Store));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IReadModelStore store) => ValueTask.FromResult<IUnitOfWork>(schema.Store.BeginUnitOfWork());

    [Fact]
    public async Task AChangeToTextThatIsNotJson_FailsTheUnitOfWork()
    {
        var store = new PostgresReadModelStore(schema.Store);
        var table = UniqueTable();

        var unitOfWork = schema.Store.BeginUnitOfWork();
        await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await store.UpdateAsync(table, 1, "a", _ => "{not json", unitOfWork);
            await unitOfWork.CommitAsync();
        });
        await unitOfWork.RollbackAsync();

        Assert.Null(await store.GetAsync(table, "a"));
    }

    [Fact]
    public async Task TwoUnitsCreatingOneDocument_AtOnce_LoseNoUpdate()
    {
        var store = new PostgresReadModelStore(schema.Store);
        var table = UniqueTable();
        static string Increment(string? current) => $$"""{"n":{{(current is null ? 0 : Number(current)) + 1}}}""";

        var first = schema.Store.BeginUnitOfWork();
        await store.UpdateAsync(table, 1, "counter", Increment, first);

        // The second unit found no row to lock and waits on the first's uncommitted insert of the same id.
        var second = schema.Store.BeginUnitOfWork();
        var waiting = store.UpdateAsync(table, 1, "counter", Increment, second).AsTask();
        await Eventually.UntilAsync(
            async () => waiting.IsCompleted || await PostgresTestDatabase.ScalarAsync<long>(
                $"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%rm_{table}_g1%'") > 0,
            "the second unit of work waits for the first one's insert");
        await first.CommitAsync();
        await waiting;
        await second.CommitAsync();

        Assert.Equal(2, Number(await store.GetAsync(table, "counter")));
    }

    [Fact]
    public async Task ARoleWithoutTheRightToCreate_WritesAndReadsAGenerationMadeAhead()
    {
        await using var owned = new TemporarySchema();
        await using (var owner = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = owned.Name }))
        {
            await new PostgresReadModelStore(owner).ResetGenerationAsync("orders", 2);
        }

        var role = "herald_app_" + Guid.NewGuid().ToString("N")[..8];
        await PostgresTestDatabase.ExecuteAsync($"""
            CREATE ROLE {role} LOGIN PASSWORD 'app';
            GRANT USAGE ON SCHEMA "{owned.Name}" TO {role};
            GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{owned.Name}" TO {role};
            GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA "{owned.Name}" TO {role};
            """);
        try
        {
            var asApp = new NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString) { Username = role, Password = "app" }.ConnectionString;
            await using var store = await PostgresEventStore.CreateAsync(asApp, new PostgresStoreOptions { Schema = owned.Name });
            var readModels = new PostgresReadModelStore(store);

            var unitOfWork = store.BeginUnitOfWork();
            await readModels.UpdateAsync("orders", 2, "o1", _ => """{"status":"Confirmed"}""", unitOfWork);
            await readModels.ActivateGenerationAsync("orders", 2, unitOfWork);
            await unitOfWork.CommitAsync();

            Assert.Single(await readModels.QueryAsync("orders", new ReadModelQuery { Where = new Dictionary<string, string> { ["status"] = "Confirmed" } }));
        }
        finally
        {
            await PostgresTestDatabase.ExecuteAsync($"DROP OWNED BY {role}; DROP ROLE {role};");
        }
    }
}
