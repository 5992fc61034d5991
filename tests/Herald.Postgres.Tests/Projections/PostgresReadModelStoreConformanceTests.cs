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
    public async Task Update_OfAnIdHoldingU0000_IsRefusedNamingTheId()
    {
        // PostgreSQL's text cannot hold it: the unit of work failed at its commit with a bare 22021.
        var store = new PostgresReadModelStore(schema.Store);
        var unitOfWork = schema.Store.BeginUnitOfWork();

        var refused = await Assert.ThrowsAsync<ArgumentException>(async () => await store.UpdateAsync(UniqueTable(), 1, "a\0", _ => "{}", unitOfWork));

        Assert.Equal("id", refused.ParamName);
        Assert.Contains("read-model document id 'a\\u0000' holds the character U+0000", refused.Message, StringComparison.Ordinal);
        await unitOfWork.RollbackAsync();
    }

    [Fact]
    public async Task TwoUnitsCreatingOneDocument_AtOnce_LoseNoUpdate()
    {
        var store = new PostgresReadModelStore(schema.Store);
        var table = UniqueTable();
        static string Increment(string? current) => $$"""{"n":{{(current is null ? 0 : Number(current)) + 1}}}""";

        // The second unit's change runs at its commit, and finds no row to lock: the first unit holds an uncommitted insert
        // of the same id (as its own commit-time write would), so the second's insert waits for it.
        var second = schema.Store.BeginUnitOfWork();
        await store.UpdateAsync(table, 1, "counter", Increment, second);
        var first = schema.Store.BeginUnitOfWork();
        var transaction = await first.GetNpgsqlTransactionAsync();
        await using (var insert = new NpgsqlCommand($$"""INSERT INTO "{{schema.Schema}}"."rm_{{table}}_g1" (id, data) VALUES ('counter', '{"n":1}')""", transaction.Connection, transaction))
        {
            await insert.ExecuteNonQueryAsync();
        }

        var committing = second.CommitAsync().AsTask();
        await Eventually.UntilAsync(
            async () => committing.IsCompleted || await PostgresTestDatabase.ScalarAsync<long>(
                $"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%rm_{table}_g1%'") > 0,
            "the second unit of work waits for the first one's insert");
        Assert.False(committing.IsCompleted, "the second unit must wait for the first one's insert of the same document");
        await first.CommitAsync();
        await committing;

        Assert.Equal(2, Number(await store.GetAsync(table, "counter")));
    }

    [Fact]
    public async Task ManyChangesOfManyDocuments_InOneUnitOfWork_ComposeAndWriteTogether()
    {
        var store = new PostgresReadModelStore(schema.Store);
        var table = UniqueTable();
        var seed = schema.Store.BeginUnitOfWork();
        await store.UpdateAsync(table, 1, "kept", _ => """{"n":1}""", seed);
        await store.UpdateAsync(table, 1, "gone", _ => """{"n":1}""", seed);
        await seed.CommitAsync();

        // A batch's worth of changes: updates of existing documents, inserts, a delete, and a document created then deleted.
        var unitOfWork = schema.Store.BeginUnitOfWork();
        for (var i = 0; i < 300; i++)
        {
            await store.UpdateAsync(table, 1, "d" + (i % 50), current => $$"""{"n":{{(current is null ? 0 : Number(current)) + 1}}}""", unitOfWork);
            await store.UpdateAsync(table, 1, "kept", current => $$"""{"n":{{Number(current) + 1}}}""", unitOfWork);
        }

        await store.UpdateAsync(table, 1, "gone", _ => null, unitOfWork);
        await store.UpdateAsync(table, 1, "brief", _ => """{"n":1}""", unitOfWork);
        await store.UpdateAsync(table, 1, "brief", _ => null, unitOfWork);
        Assert.Null(await store.GetAsync(table, "d0"));
        await unitOfWork.CommitAsync();

        Assert.Equal(301, Number(await store.GetAsync(table, "kept")));
        Assert.Null(await store.GetAsync(table, "gone"));
        Assert.Null(await store.GetAsync(table, "brief"));
        var all = await store.QueryAsync(table, new ReadModelQuery { Limit = 100 });
        Assert.Equal(51, all.Count);
        Assert.All(all.Where(d => d.Id.StartsWith('d')), d => Assert.Equal(6, Number(d.Json)));
    }

    [Theory]
    [InlineData("query")]
    [InlineData("get")]
    public async Task AReadWhoseSnapshotPredatesASwitchAndTheOldGenerationsDrop_ReadsAWholeGeneration(string read)
    {
        // Regression (PostgresProjectionConformanceTests seed 10 in CI: during a rebuild, all accounts read []): the lookup
        // read the active generation in its statement's snapshot, but asked whether that generation's table exists of the
        // catalog as it is now. A switch and the old generation's drop that committed in between made it answer "generation
        // 1, no table", and the read returned no document at all.
        await using var owned = new TemporarySchema();
        await using var events = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = owned.Name });
        var store = new PostgresReadModelStore(events);
        var unitOfWork = events.BeginUnitOfWork();
        await store.UpdateAsync("accounts", 1, "a", _ => """{"n":1}""", unitOfWork);
        await unitOfWork.CommitAsync();
        await store.ResetGenerationAsync("accounts", 2);
        unitOfWork = events.BeginUnitOfWork();
        await store.UpdateAsync("accounts", 2, "a", _ => """{"n":2}""", unitOfWork);
        await unitOfWork.CommitAsync();

        // The registry behind a view that waits, at its row of the table, for an advisory lock the test holds: a read's
        // lookup takes its snapshot, then waits there while the switch and the drop commit.
        var gate = Random.Shared.Next(1, int.MaxValue);
        await PostgresTestDatabase.ExecuteAsync($"""
            INSERT INTO "{owned.Name}".read_models (table_name, active_generation, activated_at) VALUES ('accounts', 1, now());
            ALTER TABLE "{owned.Name}".read_models RENAME TO read_models_data;
            CREATE VIEW "{owned.Name}".read_models AS
                SELECT * FROM "{owned.Name}".read_models_data WHERE pg_advisory_xact_lock_shared({gate})::text IS NOT NULL;
            """);
        await using var holder = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await holder.OpenAsync();
        await using (var hold = new NpgsqlCommand($"SELECT pg_advisory_lock({gate})", holder))
        {
            await hold.ExecuteNonQueryAsync();
        }

        // Read on a pool of its own, as a connection that has not looked the old generation's table up (a new one, or one
        // whose catalog cache a vacuum or other DDL cleared) does: its lookup asks the catalog, not a cached answer.
        var readerConnection = new NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString) { ApplicationName = "herald-reader-" + gate }.ConnectionString;
        await using var readerEvents = await PostgresEventStore.CreateAsync(readerConnection, new PostgresStoreOptions { Schema = owned.Name });
        var reader = new PostgresReadModelStore(readerEvents);
        var reading = read == "query"
            ? reader.QueryAsync("accounts", new ReadModelQuery()).AsTask().ContinueWith(t => t.Result.Select(d => d.Json).ToList(), TaskScheduler.Default)
            : reader.GetAsync("accounts", "a").AsTask().ContinueWith(t => t.Result is { } json ? new List<string> { json } : [], TaskScheduler.Default);
        await Eventually.UntilAsync(
            async () => reading.IsCompleted || await PostgresTestDatabase.ScalarAsync<long>(
                $"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = {gate}") > 0,
            "the read's lookup waits at the gate");
        Assert.False(reading.IsCompleted, "the read's lookup must wait at the gate");

        // What a rebuild commits: the switch, then the old generation's drop.
        await PostgresTestDatabase.ExecuteAsync($"""
            UPDATE "{owned.Name}".read_models_data SET active_generation = 2, activated_at = now() WHERE table_name = 'accounts';
            DROP TABLE "{owned.Name}".rm_accounts_g1;
            """);
        await using (var release = new NpgsqlCommand($"SELECT pg_advisory_unlock({gate})", holder))
        {
            await release.ExecuteNonQueryAsync();
        }

        // Generation 1 is gone, so only generation 2 can answer; never nothing.
        Assert.Equal([2], (await reading).Select(Number));
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
